{{- define "poller.fullname" -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "poller.selectorLabels" -}}
app: platform-api-poller
release: {{ .Release.Name }}
service: platform-api-poller
{{- end -}}
{{- define "poller.labels" -}}
{{ include "poller.selectorLabels" . }}
chart: {{ .Chart.Name }}-{{ .Chart.Version }}
heritage: {{ .Release.Service }}
{{- end -}}
