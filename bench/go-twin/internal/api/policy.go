package api

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Go twin of api/src/policy.rs and defaults.rs: validation on the raw JSON
// (numbers kept as json.Number, so a wrong type is reported by name) and
// defaulting as JSONPatch "add" operations.

type IntRange struct{ Min, Max int64 }
type FloatRange struct{ Min, Max float64 }

type Policy struct {
	Replicas         IntRange
	ShardCount       IntRange
	ScalingThreshold FloatRange
}

func DefaultPolicy() Policy {
	return Policy{
		Replicas:         IntRange{ReplicasMin, ReplicasMax},
		ShardCount:       IntRange{ShardCountMin, ShardCountMax},
		ScalingThreshold: FloatRange{ThresholdMin, ThresholdMax},
	}
}

func (r IntRange) Clamp(v int64) int64 {
	if v < r.Min {
		return r.Min
	}
	if v > r.Max {
		return r.Max
	}
	return v
}

func (r FloatRange) Clamp(v float64) float64 {
	if v < r.Min {
		return r.Min
	}
	if v > r.Max {
		return r.Max
	}
	return v
}

// AutoscalingRange is the replica range the autoscaler may move in.
func (p Policy) AutoscalingRange(s *RedisClusterSpec) IntRange {
	min := p.Replicas.Min
	if s.MinReplicas != nil {
		min = int64(*s.MinReplicas)
	}
	max := p.Replicas.Max
	if s.MaxReplicas != nil {
		max = int64(*s.MaxReplicas)
	}
	min, max = p.Replicas.Clamp(min), p.Replicas.Clamp(max)
	if max < min {
		max = min
	}
	return IntRange{min, max}
}

type Violation struct{ Field, Message string }

func (v Violation) String() string { return v.Field + ": " + v.Message }

func Describe(vs []Violation) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.String()
	}
	return strings.Join(parts, "; ")
}

// render prints a JSON value as serde_json's Display does.
func render(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

type reader struct {
	obj        map[string]any
	violations []Violation
}

func (r *reader) raw(name string) (any, bool) {
	if r.obj == nil {
		return nil, false
	}
	v, ok := r.obj[name]
	if !ok || v == nil {
		return nil, false
	}
	return v, true
}

func (r *reader) wrong(name string, v any, expected string) {
	r.violations = append(r.violations, Violation{"spec." + name, render(v) + " must be " + expected})
}

func (r *reader) int(name string) (int64, bool) {
	v, ok := r.raw(name)
	if !ok {
		return 0, false
	}
	if n, isNum := v.(json.Number); isNum {
		if i, err := n.Int64(); err == nil {
			return i, true
		}
	}
	r.wrong(name, v, "an integer")
	return 0, false
}

func (r *reader) number(name string) (float64, bool) {
	v, ok := r.raw(name)
	if !ok {
		return 0, false
	}
	if n, isNum := v.(json.Number); isNum {
		if f, err := n.Float64(); err == nil {
			return f, true
		}
	}
	r.wrong(name, v, "a number")
	return 0, false
}

func (r *reader) boolean(name string) {
	if v, ok := r.raw(name); ok {
		if _, isBool := v.(bool); !isBool {
			r.wrong(name, v, "a boolean")
		}
	}
}

func (r *reader) str(name string) (string, bool) {
	v, ok := r.raw(name)
	if !ok {
		return "", false
	}
	if s, isStr := v.(string); isStr {
		return s, true
	}
	r.wrong(name, v, "a string")
	return "", false
}

func (r *reader) object(name string) {
	if v, ok := r.raw(name); ok {
		if _, isObj := v.(map[string]any); !isObj {
			r.wrong(name, v, "an object")
		}
	}
}

func (r *reader) checkRange(name, value, min, max string, below, above bool) {
	var msg string
	switch {
	case below:
		msg = value + " is below the minimum " + min
	case above:
		msg = value + " is above the maximum " + max
	default:
		return
	}
	r.violations = append(r.violations, Violation{"spec." + name, msg + " (allowed range " + min + " to " + max + ")"})
}

func (r *reader) intIn(name string, rg IntRange) (int64, bool) {
	v, ok := r.int(name)
	if !ok {
		return 0, false
	}
	r.checkRange(name, strconv.FormatInt(v, 10), strconv.FormatInt(rg.Min, 10), strconv.FormatInt(rg.Max, 10), v < rg.Min, v > rg.Max)
	return v, true
}

// ValidateSpec checks a spec (nil: no spec) against the policy and returns
// every violation.
func ValidateSpec(spec any, p Policy) []Violation {
	var obj map[string]any
	switch s := spec.(type) {
	case nil:
	case map[string]any:
		obj = s
	default:
		return []Violation{{"spec", render(spec) + " must be an object"}}
	}
	r := &reader{obj: obj}
	replicas, ok := r.intIn("replicas", p.Replicas)
	if !ok {
		replicas = p.Replicas.Clamp(DefaultReplicas)
	}
	r.intIn("shard_count", p.ShardCount)
	if t, ok := r.number("scaling_threshold"); ok {
		rg := p.ScalingThreshold
		r.checkRange("scaling_threshold", fmtFloat(t), fmtFloat(rg.Min), fmtFloat(rg.Max), t < rg.Min, t > rg.Max)
	}
	min, hasMin := r.intIn("min_replicas", p.Replicas)
	max, hasMax := r.intIn("max_replicas", p.Replicas)
	window := IntRange{WindowMin, WindowMax}
	r.intIn("scale_down_stabilization_seconds", window)
	r.intIn("scale_up_cooldown_seconds", window)
	r.boolean("autoscaling_paused")
	if s, ok := r.str("image"); ok && strings.TrimSpace(s) == "" {
		r.violations = append(r.violations, Violation{"spec.image", "must not be empty"})
	}
	r.object("resources")
	r.object("storage")

	inPolicy := func(v int64) bool { return p.Replicas.Min <= v && v <= p.Replicas.Max }
	hasMin = hasMin && inPolicy(min)
	hasMax = hasMax && inPolicy(max)
	switch {
	case hasMin && hasMax && min > max:
		r.violations = append(r.violations, Violation{"spec.min_replicas", fmt.Sprintf("%d is greater than spec.max_replicas %d", min, max)})
	case inPolicy(replicas):
		lo, hi := p.Replicas.Min, p.Replicas.Max
		if hasMin {
			lo = min
		}
		if hasMax {
			hi = max
		}
		if replicas < lo {
			r.violations = append(r.violations, Violation{"spec.replicas", fmt.Sprintf("%d is below spec.min_replicas %d (allowed range %d to %d)", replicas, lo, lo, hi)})
		} else if replicas > hi {
			r.violations = append(r.violations, Violation{"spec.replicas", fmt.Sprintf("%d is above spec.max_replicas %d (allowed range %d to %d)", replicas, hi, lo, hi)})
		}
	}
	return r.violations
}

// ValidateScale checks the spec of an autoscaling/v1 Scale.
func ValidateScale(spec any, p Policy) []Violation {
	obj, _ := spec.(map[string]any)
	r := &reader{obj: obj}
	r.intIn("replicas", p.Replicas)
	return r.violations
}

// Warnings are advice that does not block admission.
func Warnings(spec any) []string {
	replicas := int64(DefaultReplicas)
	if obj, ok := spec.(map[string]any); ok {
		if n, ok := obj["replicas"].(json.Number); ok {
			if i, err := n.Int64(); err == nil {
				replicas = i
			}
		}
	}
	if replicas == 1 {
		return []string{"spec.replicas is 1: shards have no replica, so losing a node loses its shard's data"}
	}
	return nil
}

// SpecDefaults lists every defaulted field with its value under p, in the
// order of api/src/defaults.rs.
func SpecDefaults(p Policy) []struct {
	Key   string
	Value any
} {
	return []struct {
		Key   string
		Value any
	}{
		{"replicas", p.Replicas.Clamp(DefaultReplicas)},
		{"shard_count", p.ShardCount.Clamp(DefaultShardCount)},
		{"scaling_threshold", p.ScalingThreshold.Clamp(DefaultScalingThreshold)},
		{"scale_down_stabilization_seconds", DefaultScaleDownStabilizationSeconds},
		{"scale_up_cooldown_seconds", DefaultScaleUpCooldownSeconds},
		{"autoscaling_paused", DefaultAutoscalingPaused},
		{"image", DefaultImage},
		{"resources", map[string]any{"requests": map[string]any{"cpu": DefaultCPURequest, "memory": DefaultMemoryRequest}}},
	}
}

type PatchOp struct {
	Op    string
	Path  string
	Value any
}

// DefaultPatch returns the "add" operations that default object (a whole
// RedisCluster as decoded JSON).
func DefaultPatch(object map[string]any, p Policy) []PatchOp {
	defaults := SpecDefaults(p)
	switch spec := object["spec"].(type) {
	case nil:
		m := make(map[string]any, len(defaults))
		for _, d := range defaults {
			m[d.Key] = d.Value
		}
		return []PatchOp{{"add", "/spec", m}}
	case map[string]any:
		var ops []PatchOp
		for _, d := range defaults {
			if v, ok := spec[d.Key]; !ok || v == nil {
				ops = append(ops, PatchOp{"add", "/spec/" + d.Key, d.Value})
			}
		}
		return ops
	default:
		return nil
	}
}
