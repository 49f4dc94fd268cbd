{{/*
The labels of deploy/spoke: the chart's objects carry exactly the base's, so that selectors,
`kubectl -l app.kubernetes.io/part-of=spillway` and deploy/helm_test.go see the same objects.
*/}}
{{- define "spillway-spoke.partOf" -}}
app.kubernetes.io/part-of: spillway
{{- end -}}

{{- define "spillway-spoke.selectorLabels" -}}
app.kubernetes.io/name: spillway-spoke
{{- end -}}

{{- define "spillway-spoke.labels" -}}
app.kubernetes.io/component: spoke
{{ include "spillway-spoke.selectorLabels" . }}
{{ include "spillway-spoke.partOf" . }}
{{- end -}}

{{/* The spoke's image: image.tag, or the chart's appVersion when it is empty. */}}
{{- define "spillway-spoke.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/*
spillway-spoke.settings is the data of the ConfigMap spillway-spoke-settings, the settings of
deploy/spoke's configMapGenerator. It fails the install on a value the spoke would refuse at
start, which would otherwise crash-loop it.
*/}}
{{- define "spillway-spoke.settings" -}}
{{- $region := required "region is required: this cluster's region, e.g. --set region=us-east1" .Values.region -}}
{{- $pool := .Values.eppPool -}}
{{- if and $pool .Values.eppService -}}
{{- fail "eppPool and eppService: give one (eppService serves every pool naming the Service)" -}}
{{- end -}}
{{- if not .Values.eppService -}}
{{- $pool = required "eppPool is required: namespace/name of the InferencePool whose Endpoint Picker this spoke runs, e.g. --set eppPool=llm/chat (or eppService)" .Values.eppPool -}}
{{- if not (regexMatch "^[^/]+/[^/]+$" $pool) -}}
{{- fail (printf "eppPool %q: want namespace/name of an InferencePool, e.g. llm/chat" $pool) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.replicaAffinity.enabled (not .Values.gossip.enabled) -}}
{{- fail "replicaAffinity needs gossip: the replica ring is encrypted with the fleet's gossip key (--set gossip.enabled=true)" -}}
{{- end -}}
{{- $hub := .Values.hubAddress -}}
{{- if kindIs "invalid" $hub -}}
{{- $hub = printf "spillway-hub.%s.svc:8470" .Release.Namespace -}}
{{- end -}}
{{- $settings := dict "region" $region "hub-address" $hub "cluster-set" .Values.clusterSet "epp-pool" $pool "epp-service" .Values.eppService "gateway-address" .Values.gatewayAddress "gateway-service" .Values.gatewayService -}}
{{- if .Values.gossip.enabled -}}
{{- $join := .Values.gossip.join -}}
{{- if kindIs "slice" $join -}}
{{- $join = join "," $join -}}
{{- end -}}
{{- $_ := set $settings "gossip-join" $join -}}
{{- end -}}
{{- toYaml $settings -}}
{{- end -}}

{{/* spillway-spoke.eppConfig is epp.yaml: eppConfig, or the chart's copy of deploy/spoke/epp.yaml. */}}
{{- define "spillway-spoke.eppConfig" -}}
{{- toYaml (dict "epp.yaml" (.Values.eppConfig | default (.Files.Get "files/epp.yaml"))) -}}
{{- end -}}
