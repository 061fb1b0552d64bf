{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "redis-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every resource. Truncated to 63 characters (DNS label).
When the release name already contains the chart name it is used as is, so
release "redis-operator" gives "redis-operator".
*/}}
{{- define "redis-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"<fullname>-<suffix>", truncated to a valid DNS label.
Usage: include "redis-operator.componentName" (list $ "webhook")
*/}}
{{- define "redis-operator.componentName" -}}
{{- $ctx := index . 0 }}
{{- printf "%s-%s" (include "redis-operator.fullname" $ctx) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Chart label value.
*/}}
{{- define "redis-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels of every resource.
*/}}
{{- define "redis-operator.labels" -}}
helm.sh/chart: {{ include "redis-operator.chart" . }}
app.kubernetes.io/name: {{ include "redis-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: redis-operator
{{- end }}

{{/*
Standard labels plus app.kubernetes.io/component.
Usage: include "redis-operator.componentLabels" (list $ "webhook")
*/}}
{{- define "redis-operator.componentLabels" -}}
{{ include "redis-operator.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
Selector labels of a component (immutable in Deployments: keep them stable).
Usage: include "redis-operator.selectorLabels" (list $ "webhook")
*/}}
{{- define "redis-operator.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "redis-operator.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
Container image reference: repository@digest, or repository:tag (tag defaults
to the chart's appVersion).
*/}}
{{- define "redis-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
ServiceAccount names.
*/}}
{{- define "redis-operator.operatorServiceAccountName" -}}
{{- default (include "redis-operator.componentName" (list . "operator")) .Values.serviceAccount.operatorName }}
{{- end }}

{{- define "redis-operator.webhookServiceAccountName" -}}
{{- default (include "redis-operator.componentName" (list . "webhook")) .Values.serviceAccount.webhookName }}
{{- end }}

{{/*
Names shared between templates and the binaries' flags.
*/}}
{{- define "redis-operator.policyConfigMapName" -}}
{{- include "redis-operator.componentName" (list . "policy") }}
{{- end }}

{{- define "redis-operator.leaseName" -}}
{{- include "redis-operator.componentName" (list . "operator") }}
{{- end }}

{{- define "redis-operator.operatorMetricsServiceName" -}}
{{- include "redis-operator.componentName" (list . "operator-metrics") }}
{{- end }}

{{- define "redis-operator.webhookServiceName" -}}
{{- include "redis-operator.componentName" (list . "webhook") }}
{{- end }}

{{/* Both webhook configurations (validating and mutating) use this name. */}}
{{- define "redis-operator.webhookConfigName" -}}
{{- include "redis-operator.fullname" . }}
{{- end }}

{{- define "redis-operator.webhookSecretName" -}}
{{- default (include "redis-operator.componentName" (list . "webhook-tls")) .Values.webhook.certs.secretName }}
{{- end }}

{{/* Self-managed mode: the webhook CA's Secret, which only the operator reads. */}}
{{- define "redis-operator.webhookCaSecretName" -}}
{{- printf "%s-ca" (include "redis-operator.webhookSecretName" .) }}
{{- end }}

{{/* True ("true") when the operator keeps the webhook's certificates. */}}
{{- define "redis-operator.operatorKeepsWebhookCerts" -}}
{{- if and .Values.webhook.enabled (eq .Values.webhook.certs.mode "self-managed") }}true{{ end }}
{{- end }}

{{/* cert-manager objects (cert-manager mode). */}}
{{- define "redis-operator.certificateName" -}}
{{- include "redis-operator.componentName" (list . "webhook") }}
{{- end }}

{{- define "redis-operator.caCertificateName" -}}
{{- include "redis-operator.componentName" (list . "webhook-ca") }}
{{- end }}

{{- define "redis-operator.selfSignedIssuerName" -}}
{{- include "redis-operator.componentName" (list . "selfsigned") }}
{{- end }}

{{- define "redis-operator.caIssuerName" -}}
{{- include "redis-operator.componentName" (list . "webhook-ca") }}
{{- end }}

{{/*
True ("true") when the webhook runs in the cluster (enabled, no external url).
*/}}
{{- define "redis-operator.webhookInCluster" -}}
{{- if and .Values.webhook.enabled (not .Values.webhook.url) }}true{{ end }}
{{- end }}

{{/*
Checksum of the rendered policy ConfigMap, for pod template annotations:
a policy change rolls both Deployments.
*/}}
{{- define "redis-operator.policyChecksum" -}}
{{- include (print .Template.BasePath "/policy-configmap.yaml") . | sha256sum }}
{{- end }}

{{/*
Validation of value combinations the JSON schema cannot express. Included by
every template that depends on them, so that a bad combination fails the
render with one clear message.
*/}}
{{- define "redis-operator.validate" -}}
{{- range $field, $b := .Values.webhook.policy }}
{{- if gt (float64 $b.min) (float64 $b.max) }}
{{- fail (printf "webhook.policy.%s: min (%v) must not exceed max (%v)" $field $b.min $b.max) }}
{{- end }}
{{- end }}
{{- if and .Values.webhook.enabled (eq .Values.webhook.certs.mode "secret") (not .Values.webhook.certs.caBundle) }}
{{- fail "webhook.certs.caBundle is required when webhook.certs.mode is \"secret\" (base64-encoded PEM of the CA that signed the Secret's tls.crt)" }}
{{- end }}
{{- if and (include "redis-operator.webhookInCluster" .) (eq .Values.webhook.certs.mode "self-managed") (not .Values.operator.enabled) }}
{{- fail "webhook.certs.mode \"self-managed\" needs operator.enabled=true: the operator keeps the webhook's certificates, and without them the webhook never becomes ready and every RedisCluster change is refused (or choose webhook.certs.mode cert-manager or secret)" }}
{{- end }}
{{- if and .Values.operator.enabled (not .Values.operator.leaderElection.enabled) (gt (int .Values.operator.replicas) 1) }}
{{- fail "operator.replicas > 1 requires operator.leaderElection.enabled=true" }}
{{- end }}
{{- end }}
