// twin-operator: a minimal controller-runtime operator that does the same
// work per RedisCluster as redis-operator with --manage-topology=false
// (operator/src/controller.rs): the same children, applied with Server-Side
// Apply behind the same spec-hash annotation, the same status (SSA on the
// status subresource, written only when it changed), the same autoscaling
// decision from PodMetrics, and the same concurrency. For benchmarks only.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"redis-operator.bench/go-twin/internal/api"
	"redis-operator.bench/go-twin/internal/desired"
	"redis-operator.bench/go-twin/internal/logic"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

type memory struct {
	autoscale logic.AutoscaleState
	readAt    float64
	hasRead   bool
	util      *float64
	utilErr   string
}

type Reconciler struct {
	client   client.Client
	reader   client.Reader
	recorder events.EventRecorder
	policy   api.Policy
	interval time.Duration

	mu  sync.Mutex
	mem map[types.NamespacedName]*memory
}

func nowSecs() float64 { return float64(time.Now().UnixMilli()) / 1000 }

func ownedShard(labels map[string]string) (int, bool) {
	s, ok := labels[desired.ShardLabel]
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

func (r *Reconciler) memFor(key types.NamespacedName) *memory {
	m, ok := r.mem[key]
	if !ok {
		m = &memory{}
		r.mem[key] = m
	}
	return m
}

// apply writes obj with SSA unless the live copy carries its hash.
func (r *Reconciler) apply(ctx context.Context, obj client.Object, liveHash string) (bool, error) {
	hash := desired.WithHash(obj, obj)
	if liveHash == hash {
		return false, nil
	}
	body, err := json.Marshal(obj)
	if err != nil {
		return false, err
	}
	err = r.client.Patch(ctx, obj, client.RawPatch(types.ApplyPatchType, body),
		client.FieldOwner(desired.Manager), client.ForceOwnership)
	if err != nil {
		return false, fmt.Errorf("applying %T %s/%s: %w", obj, obj.GetNamespace(), obj.GetName(), err)
	}
	return true, nil
}

// metaHash reads the spec hash of a metadata-only cached object.
func (r *Reconciler) metaHash(ctx context.Context, gvk schema.GroupVersionKind, ns, name string) string {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(gvk)
	if err := r.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, m); err != nil {
		return ""
	}
	return m.GetAnnotations()[desired.SpecHash]
}

var (
	cmGVK  = corev1.SchemeGroupVersion.WithKind("ConfigMap")
	svcGVK = corev1.SchemeGroupVersion.WithKind("Service")
	pdbGVK = policyv1.SchemeGroupVersion.WithKind("PodDisruptionBudget")
)

func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	rc := &api.RedisCluster{}
	if err := r.client.Get(ctx, req.NamespacedName, rc); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if rc.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	rc.Spec.ApplyDefaults()
	ns, name := rc.Namespace, rc.Name

	// Observe.
	var stsList appsv1.StatefulSetList
	if err := r.client.List(ctx, &stsList, client.InNamespace(ns), client.MatchingLabels{desired.ClusterLabel: name}); err != nil {
		return reconcile.Result{}, err
	}
	current := map[int]int32{}
	for i := range stsList.Items {
		s := &stsList.Items[i]
		if shard, ok := ownedShard(s.Labels); ok {
			replicas := int32(1)
			if s.Spec.Replicas != nil {
				replicas = *s.Spec.Replicas
			}
			current[shard] = replicas
		}
	}
	var pods corev1.PodList
	if err := r.client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{desired.ClusterLabel: name}); err != nil {
		return reconcile.Result{}, err
	}
	firstTime := len(stsList.Items) == 0

	// Topology management is off in the benchmark: surplus follows the spec.
	var removable []int
	for s := range current {
		if s >= int(rc.Spec.ShardCount) {
			removable = append(removable, s)
		}
	}
	plan := desired.ShardPlan(&rc.Spec, current, true, removable)
	children := desired.Build(rc, plan)
	writes := 0
	count := func(wrote bool, err error) error {
		if wrote {
			writes++
		}
		return err
	}
	if err := count(r.apply(ctx, children.Config, r.metaHash(ctx, cmGVK, ns, children.Config.Name))); err != nil {
		return reconcile.Result{}, err
	}
	for _, svc := range []*corev1.Service{children.Headless, children.Client} {
		if err := count(r.apply(ctx, svc, r.metaHash(ctx, svcGVK, ns, svc.Name))); err != nil {
			return reconcile.Result{}, err
		}
	}
	for _, sts := range children.StatefulSets {
		live := ""
		for i := range stsList.Items {
			if stsList.Items[i].Name == sts.Name {
				live = stsList.Items[i].Annotations[desired.SpecHash]
			}
		}
		if err := count(r.apply(ctx, sts, live)); err != nil {
			return reconcile.Result{}, err
		}
	}
	for _, pdb := range children.PDBs {
		if err := count(r.apply(ctx, pdb, r.metaHash(ctx, pdbGVK, ns, pdb.Name))); err != nil {
			return reconcile.Result{}, err
		}
	}
	for shard, replicas := range plan {
		if _, exists := current[shard]; replicas != 0 || !exists {
			continue
		}
		objName := desired.StatefulSetName(name, shard)
		for _, obj := range []client.Object{
			&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: objName}},
			&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: objName}},
		} {
			if err := r.client.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
				return reconcile.Result{}, err
			}
			writes++
		}
		r.recorder.Eventf(rc, nil, corev1.EventTypeNormal, "ShardRemoved", "Reconcile", "shard %d drained and removed", shard)
	}
	if firstTime && writes > 0 {
		r.recorder.Eventf(rc, nil, corev1.EventTypeNormal, "Created", "Reconcile",
			"created %d StatefulSets with %d nodes each", len(children.StatefulSets), rc.Spec.Replicas)
	}

	// Utilisation, read at most once per interval.
	now := nowSecs()
	r.mu.Lock()
	m := r.memFor(req.NamespacedName)
	cached := m.hasRead && now-m.readAt < r.interval.Seconds()
	util, utilErr := m.util, m.utilErr
	r.mu.Unlock()
	if !cached {
		u, err := r.readUtilization(ctx, ns, name, pods.Items, now)
		util, utilErr = nil, ""
		if err != nil {
			utilErr = err.Error()
		} else {
			util = &u
		}
		// Nothing was read without a ready pod: read the first one at once.
		if !errors.Is(err, errNoReadyPods) {
			r.mu.Lock()
			m = r.memFor(req.NamespacedName)
			m.hasRead, m.readAt, m.util, m.utilErr = true, now, util, utilErr
			r.mu.Unlock()
		}
	}
	if util == nil && rc.Status != nil {
		for _, c := range rc.Status.Conditions {
			if c.Type == logic.MetricsAvailable && c.Status == metav1.ConditionTrue {
				r.recorder.Eventf(rc, nil, corev1.EventTypeWarning, "MetricsUnavailable", "Reconcile", "%s", utilErr)
			}
		}
	}

	// Autoscale.
	var lastScale *float64
	var lastScaleTime *metav1.Time
	if rc.Status != nil && rc.Status.LastScaleTime != nil {
		v := float64(rc.Status.LastScaleTime.UnixMilli()) / 1000
		lastScale = &v
		lastScaleTime = rc.Status.LastScaleTime
	}
	r.mu.Lock()
	m = r.memFor(req.NamespacedName)
	decision := logic.Decide(&logic.Inputs{
		Replicas:    rc.Spec.Replicas,
		Range:       r.policy.AutoscalingRange(&rc.Spec),
		Threshold:   rc.Spec.ScalingThreshold,
		Paused:      rc.Spec.AutoscalingPaused,
		Utilization: util,
		Cooldown:    time.Duration(rc.Spec.ScaleUpCooldownSeconds) * time.Second,
		Window:      time.Duration(rc.Spec.ScaleDownStabilizationSeconds) * time.Second,
		LastScale:   lastScale,
		Now:         now,
	}, &m.autoscale)
	r.mu.Unlock()

	// Status.
	shards := make([]logic.ShardObservation, 0, rc.Spec.ShardCount)
	for shard := 0; shard < int(rc.Spec.ShardCount); shard++ {
		obs := logic.ShardObservation{}
		for i := range stsList.Items {
			s := &stsList.Items[i]
			if n, ok := ownedShard(s.Labels); ok && n == shard {
				obs.Replicas = s.Status.Replicas
				obs.Ready = s.Status.ReadyReplicas
				if s.Spec.Replicas != nil {
					obs.Target = *s.Spec.Replicas
				}
			}
		}
		shards = append(shards, obs)
	}
	draining := 0
	for s := range current {
		if s >= int(rc.Spec.ShardCount) {
			draining++
		}
	}
	if decision.Scale {
		t := metav1.Now()
		lastScaleTime = &t
	}
	gen := rc.Generation
	newStatus := logic.BuildStatus(rc.Status, &logic.Observed{
		Generation:     &gen,
		SpecReplicas:   rc.Spec.Replicas,
		SpecShards:     rc.Spec.ShardCount,
		Shards:         shards,
		DrainingShards: draining,
		Utilization:    util,
		UtilizationErr: utilErr,
		Selector:       desired.SelectorString(name),
		LastScaleTime:  lastScaleTime,
	}, metav1.Now())
	if rc.Status == nil || !equality.Semantic.DeepEqual(rc.Status, newStatus) {
		body, err := json.Marshal(map[string]any{
			"apiVersion": api.GroupVersion.String(),
			"kind":       "RedisCluster",
			"metadata":   map[string]any{"name": name, "namespace": ns},
			"status":     newStatus,
		})
		if err != nil {
			return reconcile.Result{}, err
		}
		if err := r.client.Status().Patch(ctx, rc, client.RawPatch(types.ApplyPatchType, body),
			client.FieldOwner(desired.Manager), client.ForceOwnership); err != nil {
			return reconcile.Result{}, fmt.Errorf("writing status of %s/%s: %w", ns, name, err)
		}
	}
	if decision.Scale {
		patch := []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, decision.To))
		if err := r.client.SubResource("scale").Patch(ctx, rc, client.RawPatch(types.MergePatchType, patch),
			client.FieldOwner(desired.Manager)); err != nil {
			return reconcile.Result{}, fmt.Errorf("scaling %s/%s: %w", ns, name, err)
		}
		reason := "ScaledDown"
		if decision.To > decision.From {
			reason = "ScaledUp"
		}
		r.recorder.Eventf(rc, nil, corev1.EventTypeNormal, reason, "Reconcile", "replicas %d -> %d", decision.From, decision.To)
	}
	busy := newStatus.Phase == nil || *newStatus.Phase != "Ready"
	if busy {
		return reconcile.Result{RequeueAfter: min(3*time.Second, r.interval)}, nil
	}
	return reconcile.Result{RequeueAfter: r.interval}, nil
}

func readySince(p *corev1.Pod) (float64, bool) {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return float64(c.LastTransitionTime.UnixMilli()) / 1000, true
		}
	}
	return 0, false
}

var errNoReadyPods = errors.New("no ready Redis pods")

var podMetricsGVK = schema.GroupVersionKind{Group: "metrics.k8s.io", Version: "v1beta1", Kind: "PodMetricsList"}

func (r *Reconciler) readUtilization(ctx context.Context, ns, name string, pods []corev1.Pod, now float64) (float64, error) {
	var ready []logic.ReadyPod
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil {
			continue
		}
		since, ok := readySince(p)
		if !ok {
			continue
		}
		var req float64
		for _, c := range p.Spec.Containers {
			if c.Name == "redis" {
				if q, ok := c.Resources.Requests[corev1.ResourceCPU]; ok {
					req, _ = logic.ParseCPU(q.String())
				}
			}
		}
		ready = append(ready, logic.ReadyPod{Name: p.Name, RequestCores: req, ReadySince: since})
	}
	// PodMetrics cannot change this answer: no call (as ours).
	if len(ready) == 0 {
		return 0, errNoReadyPods
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(podMetricsGVK)
	sel, _ := labels.Parse(desired.SelectorString(name))
	if err := r.reader.List(ctx, list, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return 0, fmt.Errorf("reading PodMetrics: %w", err)
	}
	usage := map[string]logic.Usage{}
	for _, item := range list.Items {
		ts, _, _ := unstructured.NestedString(item.Object, "timestamp")
		t, err := time.Parse(time.RFC3339, ts)
		if err != nil {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(item.Object, "containers")
		for _, c := range containers {
			cm, _ := c.(map[string]any)
			if cm["name"] != "redis" {
				continue
			}
			cpu, _, _ := unstructured.NestedString(cm, "usage", "cpu")
			if cores, ok := logic.ParseCPU(cpu); ok {
				usage[item.GetName()] = logic.Usage{Cores: cores, Timestamp: float64(t.UnixMilli()) / 1000}
			}
		}
	}
	maxAge := max(3*r.interval.Seconds(), 90)
	return logic.Utilization(ready, usage, now, maxAge)
}

// ---- benchmark instrumentation (off unless --reconcile-log is given) ----

type callCounter struct{ reads, writes atomic.Int64 }
type counterKey struct{}

// countingTransport counts the API calls a reconcile makes, by method.
type countingTransport struct{ next http.RoundTripper }

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if c, ok := req.Context().Value(counterKey{}).(*callCounter); ok {
		if req.Method == http.MethodGet {
			c.reads.Add(1)
		} else {
			c.writes.Add(1)
		}
	}
	return t.next.RoundTrip(req)
}

// tracing wraps a reconciler and writes one JSON line per reconcile:
// start (Unix µs), duration (µs), API reads and writes made.
type tracing struct {
	inner reconcile.Reconciler
	mu    sync.Mutex
	out   *os.File
}

func (t *tracing) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	c := &callCounter{}
	ctx = context.WithValue(ctx, counterKey{}, c)
	start := time.Now()
	res, err := t.inner.Reconcile(ctx, req)
	d := time.Since(start)
	line := fmt.Sprintf("{\"start_us\":%d,\"dur_us\":%d,\"reads\":%d,\"writes\":%d}\n",
		start.UnixMicro(), d.Microseconds(), c.reads.Load(), c.writes.Load())
	t.mu.Lock()
	_, _ = t.out.WriteString(line)
	t.mu.Unlock()
	return res, err
}

// ---- wiring ----

func stripStatefulSet(o any) (any, error) {
	if s, ok := o.(*appsv1.StatefulSet); ok {
		s.ManagedFields = nil
		s.Spec.Template = corev1.PodTemplateSpec{}
		s.Spec.VolumeClaimTemplates = nil
	}
	return o, nil
}

func stripPod(o any) (any, error) {
	if p, ok := o.(*corev1.Pod); ok {
		p.ManagedFields = nil
		p.Spec.Volumes = nil
		p.Spec.Affinity = nil
		for i := range p.Spec.Containers {
			c := &p.Spec.Containers[i]
			c.Env, c.Command, c.ReadinessProbe, c.LivenessProbe, c.VolumeMounts = nil, nil, nil, nil, nil
		}
	}
	return o, nil
}

func main() {
	metricsBind := flag.String("metrics-bind", "127.0.0.1:8080", "HTTP address for /metrics, /healthz and /readyz")
	interval := flag.Duration("metrics-interval", 15*time.Second, "how often PodMetrics are read")
	concurrency := flag.Int("concurrency", 8, "reconciles running at once")
	manageTopology := flag.Bool("manage-topology", false, "must be false: the twin has no topology management")
	namespaces := flag.String("namespaces", "", "namespaces to watch, comma-separated; all when empty")
	reconcileLog := flag.String("reconcile-log", "", "write one JSON line per reconcile to this file (benchmark instrumentation)")
	flag.Parse()
	if *manageTopology {
		fmt.Fprintln(os.Stderr, "twin-operator: --manage-topology=true is not implemented")
		os.Exit(2)
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(false)))
	log := ctrl.Log.WithName("twin-operator")

	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = api.AddToScheme(scheme)

	cfg := ctrl.GetConfigOrDie() // QPS -1: no client-side rate limit, as kube-rs
	if *reconcileLog != "" {
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{rt} })
	}

	ours := labels.SelectorFromSet(labels.Set{"app.kubernetes.io/managed-by": desired.Manager})
	cacheOpts := cache.Options{
		DefaultLabelSelector: ours,
		DefaultTransform:     cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&api.RedisCluster{}:   {Label: labels.Everything()},
			&appsv1.StatefulSet{}: {Transform: stripStatefulSet},
			&corev1.Pod{}:         {Transform: stripPod},
		},
	}
	if *namespaces != "" {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range strings.Split(*namespaces, ",") {
			cacheOpts.DefaultNamespaces[ns] = cache.Config{}
		}
	}

	var ready atomic.Bool
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  cacheOpts,
		HealthProbeBindAddress: "0",
		Metrics: metricsserver.Options{
			BindAddress: *metricsBind,
			ExtraHandlers: map[string]http.Handler{
				"/healthz": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }),
				"/readyz": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					if !ready.Load() {
						http.Error(w, "caches not synced", http.StatusServiceUnavailable)
						return
					}
					_, _ = w.Write([]byte("ok"))
				}),
			},
		},
	})
	if err != nil {
		log.Error(err, "creating the manager")
		os.Exit(1)
	}

	var rec reconcile.Reconciler = &Reconciler{
		client:   mgr.GetClient(),
		reader:   mgr.GetAPIReader(),
		recorder: mgr.GetEventRecorder(desired.Manager),
		policy:   api.DefaultPolicy(),
		interval: *interval,
		mem:      map[types.NamespacedName]*memory{},
	}
	if *reconcileLog != "" {
		f, err := os.Create(*reconcileLog)
		if err != nil {
			log.Error(err, "opening the reconcile log")
			os.Exit(1)
		}
		rec = &tracing{inner: rec, out: f}
	}

	err = ctrl.NewControllerManagedBy(mgr).
		Named("rediscluster").
		For(&api.RedisCluster{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&appsv1.StatefulSet{}).
		Owns(&corev1.Service{}, builder.OnlyMetadata).
		Owns(&corev1.ConfigMap{}, builder.OnlyMetadata).
		Owns(&policyv1.PodDisruptionBudget{}, builder.OnlyMetadata).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			cluster, ok := o.GetLabels()[desired.ClusterLabel]
			if !ok {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: cluster}}}
		})).
		WithOptions(controller.Options{MaxConcurrentReconciles: *concurrency}).
		Complete(rec)
	if err != nil {
		log.Error(err, "building the controller")
		os.Exit(1)
	}

	// Ready once every informer the controller uses has synced.
	ctx := ctrl.SetupSignalHandler()
	go func() {
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return
		}
		objs := []client.Object{&api.RedisCluster{}, &appsv1.StatefulSet{}, &corev1.Pod{}}
		for _, gvk := range []schema.GroupVersionKind{svcGVK, cmGVK, pdbGVK} {
			m := &metav1.PartialObjectMetadata{}
			m.SetGroupVersionKind(gvk)
			objs = append(objs, m)
		}
		for _, o := range objs {
			inf, err := mgr.GetCache().GetInformer(ctx, o)
			if err != nil {
				return
			}
			for !inf.HasSynced() {
				select {
				case <-ctx.Done():
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
		log.Info("caches synced")
		ready.Store(true)
	}()
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "running the manager")
		os.Exit(1)
	}
}
