{{/* image REF: registry (global override first) + repository + tag. */}}
{{- define "openebs.image" -}}
{{- $registry := .global.imageRegistry | default .image.registry -}}
{{- if and .global.imageRegistry (not (hasSuffix "/" $registry)) }}{{ $registry = printf "%s/" $registry }}{{ end -}}
{{- printf "%s%s:%s" $registry .image.repository (toString .image.tag) -}}
{{- end -}}

{{- define "openebs.labels" -}}
app.kubernetes.io/part-of: openebs
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
