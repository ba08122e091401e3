{{- define "thingspace-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "thingspace-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "thingspace-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "thingspace-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "thingspace-operator.labels" -}}
{{ include "thingspace-operator.selectorLabels" . }}
{{ include "thingspace-operator.chartLabels" . }}
{{- end -}}

{{- define "thingspace-operator.chartLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The simulator (simulator.enabled): its own name, so no selector of the operator's
(Deployment, PodDisruptionBudget, metrics Service, ServiceMonitor) matches its pods. */}}
{{- define "thingspace-operator.simulatorFullname" -}}
{{- printf "%s-simulator" (include "thingspace-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "thingspace-operator.simulatorSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-simulator" (include "thingspace-operator.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: simulator
{{- end -}}

{{- define "thingspace-operator.simulatorLabels" -}}
{{ include "thingspace-operator.simulatorSelectorLabels" . }}
app.kubernetes.io/part-of: {{ include "thingspace-operator.name" . }}
{{ include "thingspace-operator.chartLabels" . }}
{{- end -}}

{{/* The ThingSpace API the operator talks to: the simulator's Service when it is enabled. */}}
{{- define "thingspace-operator.apiUrl" -}}
{{- if .Values.simulator.enabled -}}
{{- printf "http://%s.%s.svc:%d" (include "thingspace-operator.simulatorFullname" .) .Release.Namespace (int .Values.simulator.port) -}}
{{- else -}}
{{- .Values.thingspace.apiUrl -}}
{{- end -}}
{{- end -}}

{{- define "thingspace-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "thingspace-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Rules for the namespaced objects the operator works with. */}}
{{- define "thingspace-operator.namespacedRules" -}}
# Exactly what the operator uses: tests/e2e compares these grants with the API server's
# audit log, and a grant nobody uses fails it.
- apiGroups: ["thingspace.io"]
  resources: ["thingspacecallbacks"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["thingspace.io"]
  resources: ["thingspacecallbacks/status"]
  verbs: ["patch"]
{{- if not .Values.credentials.namespacedSecrets }}
# No Secret access here (credentials.namespacedSecrets=false): only ThingSpaceAccounts'
# Secrets, in the release namespace.
{{- else if .Values.secretWatch.enabled }}
# get: referenced Secrets, each by name; list/watch: only with the label selector
# thingspace.io/credentials=true (RBAC cannot restrict by label; the operator never asks
# for other Secrets).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
{{- else }}
# get: referenced Secrets, each by name, re-read once per drift period.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
