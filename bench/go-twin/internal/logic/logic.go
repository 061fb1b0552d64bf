// Package logic is the Go twin of operator/src/status.rs, autoscale.rs and
// the arithmetic of metrics_source.rs: pure functions.
package logic

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"redis-operator.bench/go-twin/internal/api"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ---- utilisation (metrics_source.rs) ----

func ParseCPU(q string) (float64, bool) {
	q = strings.TrimSpace(q)
	if q == "" {
		return 0, false
	}
	scale := 1.0
	num := q
	switch q[len(q)-1] {
	case 'n':
		num, scale = q[:len(q)-1], 1e-9
	case 'u':
		num, scale = q[:len(q)-1], 1e-6
	case 'm':
		num, scale = q[:len(q)-1], 1e-3
	case 'k':
		num, scale = q[:len(q)-1], 1e3
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) || v < 0 {
		return 0, false
	}
	return v * scale, true
}

type ReadyPod struct {
	Name         string
	RequestCores float64
	ReadySince   float64
}

type Usage struct{ Cores, Timestamp float64 }

// Utilization is sum(usage)/sum(requests)*100 over ready pods, or why not.
func Utilization(ready []ReadyPod, usage map[string]Usage, now, maxAge float64) (float64, error) {
	var missing, established []string
	for _, p := range ready {
		if _, ok := usage[p.Name]; !ok {
			missing = append(missing, p.Name)
			if now-p.ReadySince >= maxAge {
				established = append(established, p.Name)
			}
		}
	}
	if len(established) > 0 {
		return 0, fmt.Errorf("no metrics yet for pods %s", strings.Join(established, ", "))
	}
	measured := 0
	var used, requested float64
	for _, p := range ready {
		u, ok := usage[p.Name]
		if !ok {
			continue
		}
		measured++
		if p.RequestCores <= 0 {
			return 0, fmt.Errorf("pod %s requests no CPU", p.Name)
		}
		if now-u.Timestamp > maxAge {
			return 0, fmt.Errorf("metrics of pod %s are stale", p.Name)
		}
		used += u.Cores
		requested += p.RequestCores
	}
	if measured == 0 {
		if len(ready) == 0 {
			return 0, fmt.Errorf("no ready Redis pods")
		}
		return 0, fmt.Errorf("no metrics yet for pods %s", strings.Join(missing, ", "))
	}
	return used / requested * 100, nil
}

// ---- autoscale.rs ----

const Tolerance = 0.1

type Inputs struct {
	Replicas    int32
	Range       api.IntRange
	Threshold   float64
	Paused      bool
	Utilization *float64
	Cooldown    time.Duration
	Window      time.Duration
	LastScale   *float64
	Now         float64
}

type AutoscaleState struct{ BelowSince *float64 }

type Decision struct {
	Scale    bool
	From, To int32
	Hold     string
}

func Recommendation(replicas int32, u, threshold float64) int32 {
	if threshold <= 0 {
		if u > 0 {
			return replicas + 1
		}
		return replicas
	}
	ratio := u / threshold
	if math.Abs(ratio-1) <= Tolerance+1e-9 {
		return replicas
	}
	rec := math.Ceil(float64(replicas) * ratio)
	if rec >= math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(math.Max(rec, 0))
}

func Decide(i *Inputs, st *AutoscaleState) Decision {
	if i.Paused {
		st.BelowSince = nil
		return Decision{Hold: "Paused"}
	}
	if i.Utilization == nil {
		st.BelowSince = nil
		return Decision{Hold: "NoMetrics"}
	}
	rec := Recommendation(i.Replicas, *i.Utilization, i.Threshold)
	if rec > i.Replicas {
		st.BelowSince = nil
		if int64(i.Replicas) >= i.Range.Max {
			return Decision{Hold: "AtMaximum"}
		}
		if i.LastScale != nil && i.Now-*i.LastScale < i.Cooldown.Seconds() {
			return Decision{Hold: "Cooldown"}
		}
		return Decision{Scale: true, From: i.Replicas, To: i.Replicas + 1}
	}
	if rec == i.Replicas {
		st.BelowSince = nil
		return Decision{Hold: "WithinTolerance"}
	}
	var start float64
	switch {
	case st.BelowSince != nil && i.LastScale != nil:
		start = math.Max(*st.BelowSince, *i.LastScale)
	case st.BelowSince != nil:
		start = *st.BelowSince
	default:
		now := i.Now
		st.BelowSince = &now
		start = now
	}
	if int64(i.Replicas) <= i.Range.Min {
		return Decision{Hold: "AtMinimum"}
	}
	if i.Now-start < i.Window.Seconds() {
		return Decision{Hold: "Stabilizing"}
	}
	st.BelowSince = nil
	return Decision{Scale: true, From: i.Replicas, To: i.Replicas - 1}
}

// ---- status.rs ----

const (
	Ready            = "Ready"
	Scaling          = "Scaling"
	Degraded         = "Degraded"
	MetricsAvailable = "MetricsAvailable"
)

type ShardObservation struct{ Replicas, Ready, Target int32 }

type Observed struct {
	Generation     *int64
	SpecReplicas   int32
	SpecShards     int32
	Shards         []ShardObservation
	DrainingShards int
	Utilization    *float64
	UtilizationErr string
	Selector       string
	LastScaleTime  *metav1.Time
}

// BuildStatus mirrors status::build with RedisState::Unmanaged (the bench
// runs both operators with topology management off).
func BuildStatus(prev *api.RedisClusterStatus, o *Observed, now metav1.Time) *api.RedisClusterStatus {
	desired := int(o.SpecShards)
	if desired < 0 {
		desired = 0
	}
	shard := func(i int) ShardObservation {
		if i < len(o.Shards) {
			return o.Shards[i]
		}
		return ShardObservation{}
	}
	var replicas, ready int32
	for i := 0; i < desired; i++ {
		s := shard(i)
		if i == 0 || s.Replicas < replicas {
			replicas = s.Replicas
		}
		if i == 0 || s.Ready < ready {
			ready = s.Ready
		}
	}
	allReady := ready >= o.SpecReplicas && desired > 0
	resizing := o.DrainingShards > 0
	someDown, someUp := false, false
	for i := 0; i < desired; i++ {
		s := shard(i)
		if s.Target != o.SpecReplicas || s.Replicas != o.SpecReplicas {
			resizing = true
		}
		if s.Ready < min32(s.Replicas, o.SpecReplicas) {
			someDown = true
		}
		if s.Ready > 0 {
			someUp = true
		}
	}
	someDown = someDown && someUp

	var prevConds []metav1.Condition
	if prev != nil {
		prevConds = prev.Conditions
	}
	cond := func(t string, status bool, reason, message string) metav1.Condition {
		s := metav1.ConditionFalse
		if status {
			s = metav1.ConditionTrue
		}
		since := now
		for _, c := range prevConds {
			if c.Type == t && c.Status == s {
				since = c.LastTransitionTime
				break
			}
		}
		var gen int64
		if o.Generation != nil {
			gen = *o.Generation
		}
		return metav1.Condition{Type: t, Status: s, Reason: reason, Message: message, ObservedGeneration: gen, LastTransitionTime: since}
	}
	var readyCond, scalingCond, degradedCond, metricsCond metav1.Condition
	if allReady {
		readyCond = cond(Ready, true, "AllShardsReady", fmt.Sprintf("%d shards with %d ready nodes each", desired, ready))
	} else {
		readyCond = cond(Ready, false, "NodesNotReady", fmt.Sprintf("%d of %d nodes ready in the least ready shard", ready, o.SpecReplicas))
	}
	if resizing {
		scalingCond = cond(Scaling, true, "Resizing", fmt.Sprintf("moving to %d shards of %d nodes", desired, o.SpecReplicas))
	} else {
		scalingCond = cond(Scaling, false, "Stable", "at the desired size")
	}
	if someDown {
		degradedCond = cond(Degraded, true, "NodesDown", "some nodes of a running shard are not ready")
	} else {
		degradedCond = cond(Degraded, false, "Healthy", "no fault observed")
	}
	if o.Utilization != nil {
		metricsCond = cond(MetricsAvailable, true, "MetricsRead", fmt.Sprintf("average CPU %.1f%% of requests", *o.Utilization))
	} else {
		metricsCond = cond(MetricsAvailable, false, "MetricsUnavailable", o.UtilizationErr)
	}
	phase := "Scaling"
	switch {
	case degradedCond.Status == metav1.ConditionTrue:
		phase = "Degraded"
	case readyCond.Status == metav1.ConditionTrue && scalingCond.Status == metav1.ConditionFalse:
		phase = "Ready"
	case replicas == 0 && ready == 0:
		phase = "Pending"
	}
	var cpu *float64
	if o.Utilization != nil {
		v := math.Round(*o.Utilization*10) / 10
		cpu = &v
	}
	sel := o.Selector
	return &api.RedisClusterStatus{
		Replicas:           replicas,
		ReadyReplicas:      ready,
		CurrentCPU:         cpu,
		ObservedGeneration: o.Generation,
		Conditions:         []metav1.Condition{readyCond, scalingCond, degradedCond, metricsCond},
		Phase:              &phase,
		LastScaleTime:      o.LastScaleTime,
		Selector:           &sel,
	}
}

func min32(a, b int32) int32 {
	if a < b {
		return a
	}
	return b
}
