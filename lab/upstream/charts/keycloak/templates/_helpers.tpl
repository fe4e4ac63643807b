{{- define "keycloak.fullname" -}}{{ printf "%s-keycloak" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "keycloak.selectorLabels" -}}
app.kubernetes.io/name: keycloak
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "keycloak.labels" -}}
{{ include "keycloak.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{/* keycloak.image IMAGE GLOBAL: the Bitnami rule, global.imageRegistry replaces the registry. */}}
{{- define "keycloak.image" -}}
{{- printf "%s/%s:%s" (.global.imageRegistry | default .image.registry) .image.repository (toString .image.tag) -}}
{{- end -}}
