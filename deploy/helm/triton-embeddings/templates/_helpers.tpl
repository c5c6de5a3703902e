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
