//! `redis-operator-probe`: `redis-operator` with reconcile timing.
//!
//! Same library, same arguments, same runtime as operator/src/main.rs; the
//! only addition is a tracing layer. When `RECONCILE_LOG` names a file, it
//! gets one JSON line per reconcile:
//! `{"start_us":<Unix µs>,"dur_us":<µs>,"wait_us":<µs>,"busy_us":<µs>,"cpu_us":<µs>,"reads":<GETs>,"writes":<other calls>}`.
//! kube-runtime creates each reconcile future inside its `reconciling
//! object` span (the span's first enter) and polls it inside the span
//! (every later enter; the last one drops the finished future). `dur_us`
//! runs from the first poll to the end of the last one, as the twin times
//! its `Reconcile` call from entry to return; `wait_us` is the time between
//! creation and the first poll, while the future sat in kube-runtime's
//! runner. `busy_us` is the wall time spent inside polls and `cpu_us` the
//! CPU time the polling threads used meanwhile (`CLOCK_THREAD_CPUTIME_ID`
//! at enter and exit): busy minus CPU is time the thread was runnable but
//! not running. The API calls are kube-client's `HTTP` spans opened inside.

use std::fs::File;
use std::io::{LineWriter, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::time::{ClockId, clock_gettime};

use anyhow::Context as _;
use clap::Parser;
use operator::{cli::Args, run};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter};

const RECONCILE_SPAN: &str = "reconciling object";
const HTTP_SPAN: &str = "HTTP";

struct Timing {
    /// Enters so far: the first creates the future, the others poll it.
    enters: u32,
    /// End of the creation enter.
    created: Option<Instant>,
    /// The first poll: Unix µs for the trace, and the clock for durations.
    first_poll: Option<(u128, Instant)>,
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
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
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
            RECONCILE_SPAN => {
                span.extensions_mut().insert(Timing {
                    enters: 0,
                    created: None,
                    first_poll: None,
                    last_exit: None,
                    reads: 0,
                    writes: 0,
                    busy: Duration::ZERO,
                    cpu: Duration::ZERO,
                    entered: None,
                });
            }
            HTTP_SPAN => {
                let mut method = Method(None);
                attrs.record(&mut method);
                let read = method.0.as_deref() == Some("GET");
                for ancestor in span.scope().skip(1) {
                    if let Some(t) = ancestor.extensions_mut().get_mut::<Timing>() {
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
        if let Some(t) = span.extensions_mut().get_mut::<Timing>() {
            t.enters += 1;
            if t.enters < 2 {
                return;
            }
            let now = Instant::now();
            t.first_poll.get_or_insert_with(|| {
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
        if let Some(t) = span.extensions_mut().get_mut::<Timing>() {
            let now = Instant::now();
            match t.entered.take() {
                // Enter and exit of one poll happen on the same thread.
                Some((wall, cpu)) => {
                    t.busy += now.duration_since(wall);
                    t.cpu += thread_cpu().saturating_sub(cpu);
                    t.last_exit = Some(now);
                }
                None => t.created = Some(now),
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let ext = span.extensions();
        let Some(t) = ext.get::<Timing>() else { return };
        // Never polled: cancelled in the queue, not a reconcile.
        let (Some((start_us, first_poll)), Some(last_exit), Some(created)) =
            (t.first_poll, t.last_exit, t.created)
        else {
            return;
        };
        let line = format!(
            "{{\"start_us\":{start_us},\"dur_us\":{},\"wait_us\":{},\"busy_us\":{},\"cpu_us\":{},\"reads\":{},\"writes\":{}}}\n",
            last_exit.duration_since(first_poll).as_micros(),
            first_poll.duration_since(created).as_micros(),
            t.busy.as_micros(),
            t.cpu.as_micros(),
            t.reads,
            t.writes
        );
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
        }
    }
}

fn timed(meta: &Metadata<'_>) -> bool {
    meta.is_span() && matches!(meta.name(), RECONCILE_SPAN | HTTP_SPAN)
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
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run::run(args))
}
