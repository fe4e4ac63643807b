{{/* cstor.image IMAGE: the real chart's rule, registry (with its trailing "/") + repository + tag. */}}
{{- define "cstor.image" -}}
{{- printf "%s%s:%s" (.registry | default "") .repository (toString .tag) -}}
{{- end -}}

{{- define "cstor.labels" -}}
app.kubernetes.io/part-of: openebs-cstor
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
openebs.io/version: {{ .Values.release.version | quote }}
{{- end -}}
