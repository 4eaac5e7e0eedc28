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

{{- /* The namespaces served, as a JSON list (empty: every namespace). The old single
operator.watchNamespace is refused rather than ignored. */ -}}
{{- define "swiftclaw.watchNamespaces" -}}
{{- if hasKey .Values.operator "watchNamespace" -}}
{{- fail "operator.watchNamespace is gone: set operator.watchNamespaces, a list" -}}
{{- end -}}
{{- $ns := .Values.operator.watchNamespaces | default list -}}
{{- if not (kindIs "slice" $ns) -}}
{{- fail "operator.watchNamespaces must be a list of namespace names" -}}
{{- end -}}
{{- $ns | uniq | toJson -}}
{{- end -}}
