{{- define "swiftclaw.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "swiftclaw.labels" -}}
app.kubernetes.io/name: swiftclaw-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: swiftclaw
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "swiftclaw.selector" -}}
app.kubernetes.io/name: swiftclaw-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
