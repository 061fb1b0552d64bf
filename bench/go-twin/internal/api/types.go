// Package api is the Go twin of api/src/types.rs and bounds.rs: the
// RedisCluster type (snake_case on the wire, as the CRD) and its bounds.
package api

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var GroupVersion = schema.GroupVersion{Group: "redis.example.com", Version: "v1alpha1"}

// Bounds, as api/src/bounds.rs.
const (
	ReplicasMin, ReplicasMax             = 1, 10
	ShardCountMin, ShardCountMax         = 1, 5
	ThresholdMin, ThresholdMax           = 0.0, 100.0
	WindowMin, WindowMax                 = 0, 3600
	DefaultReplicas                      = 1
	DefaultShardCount                    = 1
	DefaultScalingThreshold              = 70.0
	DefaultScaleDownStabilizationSeconds = 300
	DefaultScaleUpCooldownSeconds        = 60
	DefaultAutoscalingPaused             = false
	DefaultImage                         = "redis:7.2"
	DefaultCPURequest                    = "100m"
	DefaultMemoryRequest                 = "128Mi"
)

type StorageSpec struct {
	Size             resource.Quantity `json:"size"`
	StorageClassName *string           `json:"storage_class_name,omitempty"`
}

type RedisClusterSpec struct {
	Replicas                      int32                       `json:"replicas"`
	ShardCount                    int32                       `json:"shard_count"`
	ScalingThreshold              float64                     `json:"scaling_threshold"`
	MinReplicas                   *int32                      `json:"min_replicas,omitempty"`
	MaxReplicas                   *int32                      `json:"max_replicas,omitempty"`
	ScaleDownStabilizationSeconds int32                       `json:"scale_down_stabilization_seconds"`
	ScaleUpCooldownSeconds        int32                       `json:"scale_up_cooldown_seconds"`
	AutoscalingPaused             bool                        `json:"autoscaling_paused"`
	Image                         string                      `json:"image"`
	Resources                     corev1.ResourceRequirements `json:"resources"`
	Storage                       *StorageSpec                `json:"storage,omitempty"`
}

type RedisClusterStatus struct {
	Replicas           int32              `json:"replicas"`
	ReadyReplicas      int32              `json:"ready_replicas"`
	CurrentCPU         *float64           `json:"current_cpu,omitempty"`
	ObservedGeneration *int64             `json:"observed_generation,omitempty"`
	Conditions         []metav1.Condition `json:"conditions,omitempty"`
	Phase              *string            `json:"phase,omitempty"`
	LastScaleTime      *metav1.Time       `json:"last_scale_time,omitempty"`
	Selector           *string            `json:"selector,omitempty"`
}

type RedisCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              RedisClusterSpec    `json:"spec"`
	Status            *RedisClusterStatus `json:"status,omitempty"`
}

type RedisClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RedisCluster `json:"items"`
}

// ApplyDefaults fills what the CRD schema defaults, so a decoded object
// matches the Rust serde defaults.
func (s *RedisClusterSpec) ApplyDefaults() {
	if s.Replicas == 0 {
		s.Replicas = DefaultReplicas
	}
	if s.ShardCount == 0 {
		s.ShardCount = DefaultShardCount
	}
	if s.Image == "" {
		s.Image = DefaultImage
	}
}

func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &RedisCluster{}, &RedisClusterList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// Deep copies (what controller-gen would write).

func (in *StorageSpec) DeepCopy() *StorageSpec {
	if in == nil {
		return nil
	}
	out := &StorageSpec{Size: in.Size.DeepCopy()}
	if in.StorageClassName != nil {
		v := *in.StorageClassName
		out.StorageClassName = &v
	}
	return out
}

func (in *RedisClusterSpec) DeepCopyInto(out *RedisClusterSpec) {
	*out = *in
	if in.MinReplicas != nil {
		v := *in.MinReplicas
		out.MinReplicas = &v
	}
	if in.MaxReplicas != nil {
		v := *in.MaxReplicas
		out.MaxReplicas = &v
	}
	in.Resources.DeepCopyInto(&out.Resources)
	out.Storage = in.Storage.DeepCopy()
}

func (in *RedisClusterStatus) DeepCopy() *RedisClusterStatus {
	if in == nil {
		return nil
	}
	out := *in
	if in.CurrentCPU != nil {
		v := *in.CurrentCPU
		out.CurrentCPU = &v
	}
	if in.ObservedGeneration != nil {
		v := *in.ObservedGeneration
		out.ObservedGeneration = &v
	}
	if in.Conditions != nil {
		out.Conditions = make([]metav1.Condition, len(in.Conditions))
		for i := range in.Conditions {
			in.Conditions[i].DeepCopyInto(&out.Conditions[i])
		}
	}
	if in.Phase != nil {
		v := *in.Phase
		out.Phase = &v
	}
	if in.LastScaleTime != nil {
		out.LastScaleTime = in.LastScaleTime.DeepCopy()
	}
	if in.Selector != nil {
		v := *in.Selector
		out.Selector = &v
	}
	return &out
}

func (in *RedisCluster) DeepCopyInto(out *RedisCluster) {
	out.TypeMeta = in.TypeMeta
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	in.Spec.DeepCopyInto(&out.Spec)
	out.Status = in.Status.DeepCopy()
}

func (in *RedisCluster) DeepCopyObject() runtime.Object {
	out := &RedisCluster{}
	in.DeepCopyInto(out)
	return out
}

func (in *RedisClusterList) DeepCopyObject() runtime.Object {
	out := &RedisClusterList{TypeMeta: in.TypeMeta}
	in.ListMeta.DeepCopyInto(&out.ListMeta)
	if in.Items != nil {
		out.Items = make([]RedisCluster, len(in.Items))
		for i := range in.Items {
			in.Items[i].DeepCopyInto(&out.Items[i])
		}
	}
	return out
}
