{{- define "te.name" -}}{{ .Release.Name }}-triton-embeddings{{- end -}}
{{- define "te.labels" -}}
app.kubernetes.io/name: triton-embeddings
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "te.selector" -}}
app.kubernetes.io/name: triton-embeddings
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "te.restricted" -}}model-repository,shared-memory,statistics,trace,logging{{- end -}}
{{- define "te.adminSecret" -}}{{ .Values.triton.adminKeySecret | default (printf "%s-triton-admin" (include "te.name" .)) }}{{- end -}}
