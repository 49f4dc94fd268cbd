{{/*
spillway-crds.crd renders one CRD of files/, a byte-for-byte copy of deploy/crds (hack/crds.sh),
with Helm's keep policy when .Values.keep is on. Its argument is (list $ "files/<name>.yaml").
*/}}
{{- define "spillway-crds.crd" -}}
{{- $root := index . 0 -}}
{{- $file := index . 1 -}}
{{- $crd := $root.Files.Get $file | fromYaml -}}
{{- if or (hasKey $crd "Error") (ne ($crd.kind | default "") "CustomResourceDefinition") -}}
{{- fail (printf "%s is not a CustomResourceDefinition: %v" $file ($crd.Error | default "missing or empty")) -}}
{{- end -}}
{{- if $root.Values.keep -}}
{{- $_ := set $crd.metadata "annotations" (merge (dict "helm.sh/resource-policy" "keep") ($crd.metadata.annotations | default dict)) -}}
{{- end -}}
{{ toYaml $crd }}
{{- end -}}
