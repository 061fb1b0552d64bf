// Package desired is the Go twin of operator/src/desired.rs: a pure
// function from a RedisCluster to its children.
package desired

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"

	"redis-operator.bench/go-twin/internal/api"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

const (
	RedisPort    = 6379
	BusPort      = 16379
	Manager      = "redis-operator"
	SpecHash     = "redis.example.com/spec-hash"
	ClusterLabel = "redis.example.com/cluster"
	ShardLabel   = "redis.example.com/shard"
	redisUID     = 999
)

func StatefulSetName(cluster string, shard int) string {
	return fmt.Sprintf("%s-shard-%d", cluster, shard)
}
func HeadlessName(cluster string) string   { return cluster + "-headless" }
func ConfigName(cluster string) string     { return cluster + "-config" }
func SelectorString(cluster string) string { return ClusterLabel + "=" + cluster }

func ClusterLabels(cluster string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":       "redis",
		"app.kubernetes.io/instance":   cluster,
		"app.kubernetes.io/managed-by": Manager,
		ClusterLabel:                   cluster,
	}
}

func shardLabels(cluster string, shard int) map[string]string {
	l := ClusterLabels(cluster)
	l[ShardLabel] = strconv.Itoa(shard)
	l["app.kubernetes.io/component"] = "shard"
	return l
}

func shardSelector(cluster string, shard int) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{ClusterLabel: cluster, ShardLabel: strconv.Itoa(shard)}}
}

// ShardPlan: pods per StatefulSet, indexed by shard.
func ShardPlan(spec *api.RedisClusterSpec, current map[int]int32, surplusRemovable bool, removable []int) []int32 {
	desired := int(spec.ShardCount)
	if desired < 1 {
		desired = 1
	}
	highest := 0
	for s := range current {
		if s+1 > highest {
			highest = s + 1
		}
	}
	count := desired
	if highest > count {
		count = highest
	}
	plan := make([]int32, count)
	for shard := 0; shard < count; shard++ {
		now, has := current[shard]
		if shard >= desired {
			isRemovable := false
			for _, r := range removable {
				if r == shard {
					isRemovable = true
				}
			}
			switch {
			case isRemovable:
				plan[shard] = 0
			case has:
				plan[shard] = now
			default:
				plan[shard] = spec.Replicas
			}
			continue
		}
		if has && now > spec.Replicas && !surplusRemovable {
			plan[shard] = now
		} else {
			plan[shard] = spec.Replicas
		}
	}
	return plan
}

type Children struct {
	Config       *corev1.ConfigMap
	Headless     *corev1.Service
	Client       *corev1.Service
	StatefulSets []*appsv1.StatefulSet
	PDBs         []*policyv1.PodDisruptionBudget
}

func meta(rc *api.RedisCluster, name string, labels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:      name,
		Namespace: rc.Namespace,
		Labels:    labels,
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion:         api.GroupVersion.String(),
			Kind:               "RedisCluster",
			Name:               rc.Name,
			UID:                rc.UID,
			Controller:         ptr.To(true),
			BlockOwnerDeletion: ptr.To(true),
		}},
	}
}

func RedisConf() string {
	return strings.Join([]string{
		"# Managed by redis-operator.",
		"port 6379",
		"bind * -::*",
		"protected-mode no",
		"cluster-enabled yes",
		"cluster-config-file /data/nodes.conf",
		"cluster-node-timeout 5000",
		"cluster-allow-replica-migration no",
		"appendonly yes",
		"dir /data",
		"",
	}, "\n")
}

func Build(rc *api.RedisCluster, plan []int32) *Children {
	name := rc.Name
	labels := ClusterLabels(name)
	c := &Children{}
	c.Config = &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: meta(rc, ConfigName(name), labels),
		Data:       map[string]string{"redis.conf": RedisConf()},
	}
	ports := []corev1.ServicePort{
		{Name: "redis", Port: RedisPort, TargetPort: intstr.FromInt32(RedisPort)},
		{Name: "bus", Port: BusPort, TargetPort: intstr.FromInt32(BusPort)},
	}
	selector := map[string]string{ClusterLabel: name}
	c.Headless = &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta(rc, HeadlessName(name), ClusterLabels(name)),
		Spec: corev1.ServiceSpec{
			ClusterIP:                "None",
			PublishNotReadyAddresses: true,
			Selector:                 selector,
			Ports:                    ports,
		},
	}
	c.Client = &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta(rc, name, ClusterLabels(name)),
		Spec:       corev1.ServiceSpec{Selector: map[string]string{ClusterLabel: name}, Ports: ports[:1]},
	}
	for shard, replicas := range plan {
		if replicas == 0 {
			continue
		}
		c.StatefulSets = append(c.StatefulSets, statefulSet(rc, shard, replicas))
		c.PDBs = append(c.PDBs, &policyv1.PodDisruptionBudget{
			TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
			ObjectMeta: meta(rc, StatefulSetName(name, shard), shardLabels(name, shard)),
			Spec: policyv1.PodDisruptionBudgetSpec{
				MaxUnavailable: ptr.To(intstr.FromInt32(1)),
				Selector:       shardSelector(name, shard),
			},
		})
	}
	return c
}

func statefulSet(rc *api.RedisCluster, shard int, replicas int32) *appsv1.StatefulSet {
	name := rc.Name
	spec := &rc.Spec
	labels := shardLabels(name, shard)
	container := corev1.Container{
		Name:    "redis",
		Image:   spec.Image,
		Command: []string{"sh", "-c", `exec redis-server /etc/redis/redis.conf --cluster-announce-ip "$POD_IP"`},
		Env: []corev1.EnvVar{{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"},
		}}},
		Ports: []corev1.ContainerPort{
			{Name: "redis", ContainerPort: RedisPort},
			{Name: "bus", ContainerPort: BusPort},
		},
		Resources: *spec.Resources.DeepCopy(),
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:   corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"redis-cli", "-h", "127.0.0.1", "ping"}}},
			PeriodSeconds:  5,
			TimeoutSeconds: 2,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:        corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(RedisPort)}},
			InitialDelaySeconds: 10,
			PeriodSeconds:       10,
			FailureThreshold:    6,
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "data", MountPath: "/data"},
			{Name: "config", MountPath: "/etc/redis", ReadOnly: true},
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To(int64(redisUID)),
			RunAsGroup:               ptr.To(int64(redisUID)),
		},
	}
	volumes := []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: ConfigName(name)}},
	}}}
	var claims []corev1.PersistentVolumeClaim
	if spec.Storage != nil {
		claims = []corev1.PersistentVolumeClaim{{
			ObjectMeta: metav1.ObjectMeta{Name: "data", Labels: labels},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName: spec.Storage.StorageClassName,
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceStorage: spec.Storage.Size,
				}},
			},
		}}
	} else {
		volumes = append(volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
	return &appsv1.StatefulSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSet"},
		ObjectMeta: meta(rc, StatefulSetName(name, shard), labels),
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(replicas),
			ServiceName:         HeadlessName(name),
			Selector:            shardSelector(name, shard),
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: shardLabels(name, shard)},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{container},
					Volumes:    volumes,
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
							Weight: 100,
							PodAffinityTerm: corev1.PodAffinityTerm{
								LabelSelector: shardSelector(name, shard),
								TopologyKey:   "kubernetes.io/hostname",
							},
						}},
					}},
					SecurityContext: &corev1.PodSecurityContext{
						FSGroup:        ptr.To(int64(redisUID)),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					TerminationGracePeriodSeconds: ptr.To(int64(30)),
				},
			},
			VolumeClaimTemplates: claims,
		},
	}
}

// WithHash stamps obj with a hash of its JSON and returns the hash.
func WithHash(obj metav1.Object, content any) string {
	b, _ := json.Marshal(content)
	h := fnv.New64a()
	_, _ = h.Write(b)
	hash := fmt.Sprintf("%016x", h.Sum64())
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[SpecHash] = hash
	obj.SetAnnotations(ann)
	return hash
}

// SortedShards returns the keys of m in order.
func SortedShards(m map[int]int32) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	return keys
}
