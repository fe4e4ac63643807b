{{- define "apps.fullname" -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "apps.selectorLabels" -}}
app: platform-apps
release: {{ .Release.Name }}
{{- end -}}
{{- define "apps.labels" -}}
{{ include "apps.selectorLabels" . }}
chart: {{ .Chart.Name }}-{{ .Chart.Version }}
heritage: {{ .Release.Service }}
{{- end -}}
