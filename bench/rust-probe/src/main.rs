//! `redis-operator-probe`: `redis-operator` with reconcile timing.
//!
//! Same library, same arguments, same runtime as operator/src/main.rs; the
//! only addition is a tracing layer. When `RECONCILE_LOG` names a file, it
//! gets one JSON line per reconcile:
//! `{"start_us":<Unix µs>,"dur_us":<µs>,"total_us":<µs>,"wait_us":<µs>,"busy_us":<µs>,"cpu_us":<µs>,"reads":<GETs>,"writes":<other calls>}`.
//!
//! Two nested spans are timed. Our reconcile code runs inside the
//! operator's debug span `reconcile` ([`operator::controller::RECONCILE_SPAN`]):
//! `dur_us` runs from its first enter to its last exit, as the twin times
//! its `Reconcile` call from entry to return. `busy_us` is the wall time
//! inside its polls and `cpu_us` the CPU time the polling threads used
//! meanwhile (`CLOCK_THREAD_CPUTIME_ID` at enter and exit): busy minus CPU
//! is time the thread was runnable but not running. The API calls are
//! kube-client's `HTTP` spans opened inside it.
//!
//! Around it, kube-runtime's `reconciling object` span is entered once to
//! create the future and then at every poll, which also covers handing the
//! requeue back to kube-runtime's scheduler: `total_us` runs from its first
//! poll to the end of its last one, and `wait_us` from the creation to our
//! first enter (the future sat in kube-runtime's runner).

use std::fs::File;
use std::io::{LineWriter, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::time::{ClockId, clock_gettime};

use anyhow::Context as _;
use clap::Parser;
use operator::controller::RECONCILE_SPAN as OUR_SPAN;
use operator::{cli::Args, run};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter};

const RUNTIME_SPAN: &str = "reconciling object";
const HTTP_SPAN: &str = "HTTP";

/// kube-runtime's span: creation, and its polls from first to last.
#[derive(Default)]
struct Outer {
    enters: u32,
    /// End of the creation enter.
    created: Option<Instant>,
    first_poll: Option<Instant>,
    last_exit: Option<Instant>,
    /// Our span's figures, left here when it closes.
    ours: Option<Inner>,
}

/// Our `reconcile` span.
#[derive(Default, Clone)]
struct Inner {
    /// First enter: Unix µs for the trace, and the clock for durations.
    first: Option<(u128, Instant)>,
    last_exit: Option<Instant>,
    reads: u32,
    writes: u32,
    busy: Duration,
    cpu: Duration,
    /// Wall and thread-CPU clocks at the enter of the poll in progress.
    entered: Option<(Instant, Duration)>,
}

fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

struct Timer {
    out: Mutex<LineWriter<File>>,
}

struct Method(Option<String>);

impl Visit for Method {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "http.method" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S> Layer<S> for Timer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        match attrs.metadata().name() {
            RUNTIME_SPAN => span.extensions_mut().insert(Outer::default()),
            OUR_SPAN => span.extensions_mut().insert(Inner::default()),
            HTTP_SPAN => {
                let mut method = Method(None);
                attrs.record(&mut method);
                let read = method.0.as_deref() == Some("GET");
                for ancestor in span.scope().skip(1) {
                    if let Some(t) = ancestor.extensions_mut().get_mut::<Inner>() {
                        if read {
                            t.reads += 1;
                        } else {
                            t.writes += 1;
                        }
                        break;
                    }
                }
            }
            _ => {}
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let now = Instant::now();
        if let Some(t) = ext.get_mut::<Outer>() {
            t.enters += 1;
            if t.enters >= 2 {
                t.first_poll.get_or_insert(now);
            }
        } else if let Some(t) = ext.get_mut::<Inner>() {
            t.first.get_or_insert_with(|| {
                let unix_us = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_micros())
                    .unwrap_or_default();
                (unix_us, now)
            });
            t.entered = Some((now, thread_cpu()));
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let now = Instant::now();
        if let Some(t) = ext.get_mut::<Outer>() {
            if t.enters < 2 {
                t.created = Some(now);
            } else {
                t.last_exit = Some(now);
            }
        } else if let Some(t) = ext.get_mut::<Inner>()
            && let Some((wall, cpu)) = t.entered.take()
        {
            // Enter and exit of one poll happen on the same thread.
            t.busy += now.duration_since(wall);
            t.cpu += thread_cpu().saturating_sub(cpu);
            t.last_exit = Some(now);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        if let Some(inner) = span.extensions().get::<Inner>() {
            // Hand our figures to kube-runtime's span, which closes later.
            if let Some(parent) = span.parent()
                && let Some(outer) = parent.extensions_mut().get_mut::<Outer>()
            {
                outer.ours = Some(inner.clone());
            }
            return;
        }
        let ext = span.extensions();
        let Some(t) = ext.get::<Outer>() else { return };
        // Never polled: cancelled in the queue, not a reconcile.
        let (Some(created), Some(first_poll), Some(last_exit), Some(ours)) =
            (t.created, t.first_poll, t.last_exit, t.ours.as_ref())
        else {
            return;
        };
        let (Some((start_us, first)), Some(our_exit)) = (ours.first, ours.last_exit) else {
            return;
        };
        let line = format!(
            "{{\"start_us\":{start_us},\"dur_us\":{},\"total_us\":{},\"wait_us\":{},\"busy_us\":{},\"cpu_us\":{},\"reads\":{},\"writes\":{}}}\n",
            our_exit.duration_since(first).as_micros(),
            last_exit.duration_since(first_poll).as_micros(),
            first.duration_since(created).as_micros(),
            ours.busy.as_micros(),
            ours.cpu.as_micros(),
            ours.reads,
            ours.writes
        );
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
        }
    }
}

fn timed(meta: &Metadata<'_>) -> bool {
    meta.is_span()
        && match meta.name() {
            RUNTIME_SPAN | HTTP_SPAN => true,
            OUR_SPAN => meta.target().starts_with("operator"),
            _ => false,
        }
}

fn main() -> anyhow::Result<()> {
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let args = Args::parse();
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let timer = match std::env::var_os("RECONCILE_LOG") {
        Some(path) => {
            let file = File::create(&path)
                .with_context(|| format!("creating {}", path.to_string_lossy()))?;
            Some(
                Timer {
                    out: Mutex::new(LineWriter::new(file)),
                }
                .with_filter(filter::filter_fn(timed)),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(env))
        .with(timer)
        .init();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run::run(args))
}
