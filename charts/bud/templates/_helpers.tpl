{{- define "bud.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bud.operator.name" -}}
{{- printf "%s-operator" (include "bud.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bud.labels" -}}
app.kubernetes.io/part-of: bud-foundry
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "bud.operator.selectorLabels" -}}
app.kubernetes.io/name: bud-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bud.operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bud.operator.name" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
