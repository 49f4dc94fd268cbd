{{/*
The labels of deploy/hub: the chart's objects carry exactly the base's, so that selectors,
`kubectl -l app.kubernetes.io/part-of=spillway` and deploy/helm_test.go see the same objects.
*/}}
{{- define "spillway-hub.partOf" -}}
app.kubernetes.io/part-of: spillway
{{- end -}}

{{- define "spillway-hub.selectorLabels" -}}
app.kubernetes.io/name: spillway-hub
{{- end -}}

{{- define "spillway-hub.labels" -}}
app.kubernetes.io/component: hub
{{ include "spillway-hub.selectorLabels" . }}
{{ include "spillway-hub.partOf" . }}
{{- end -}}

{{/* The hub's image: image.tag, or the chart's appVersion when it is empty. */}}
{{- define "spillway-hub.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
