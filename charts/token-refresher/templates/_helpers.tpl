{{/*
Helpers shared by the templates. Keep this file short: decisions belong in the operator
(Python), the chart only renders configuration.
*/}}

{{/* Name of every object: the release name, suffixed with the chart name unless it has it. */}}
{{- define "token-refresher.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. The operator's pods and Service add the component label. */}}
{{- define "token-refresher.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The operator's pods: what the Deployment, Service, PDB and anti-affinity select on. */}}
{{- define "token-refresher.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* An image reference from {repository, tag, digest}: by digest when one is given. */}}
{{- define "token-refresher.image" -}}
{{- $image := index . 0 -}}{{- $appVersion := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $appVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "token-refresher.tlsSecretName" -}}
{{- if eq .Values.tls.mode "secret" -}}
{{- .Values.tls.secret.name -}}
{{- else -}}
{{- include "token-refresher.fullname" . }}-tls
{{- end -}}
{{- end -}}

{{/*
PEM of the CA the kube-apiserver and the sidecars trust, for the modes where the chart
knows it (cert-manager's is injected by its cainjector and read by the operator from
ca.crt in the Secret). In generate mode the CA and serving certificate are made once per
render (cached on the root context, so the Secret, the ConfigMap and the webhook agree)
and read back from the existing Secret on upgrades, so a `helm upgrade` does not rotate
them under running sidecars.
*/}}
{{- define "token-refresher.caBundle" -}}
{{- if eq .Values.tls.mode "secret" -}}
{{- .Values.tls.secret.caBundle -}}
{{- else if eq .Values.tls.mode "generate" -}}
{{- (include "token-refresher.generatedTLS" . | fromYaml).ca -}}
{{- end -}}
{{- end -}}

{{- define "token-refresher.generatedTLS" -}}
{{- if not (hasKey $ "tokenRefresherTLS") -}}
{{- $name := include "token-refresher.fullname" . -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-tls" $name) -}}
{{- $data := dig "data" dict $existing -}}
{{- if and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") -}}
{{- $_ := set $ "tokenRefresherTLS" (dict "ca" (index $data "ca.crt" | b64dec) "cert" (index $data "tls.crt" | b64dec) "key" (index $data "tls.key" | b64dec)) -}}
{{- else -}}
{{- $days := int .Values.tls.generate.validityDays -}}
{{- $ca := genCA (printf "%s-ca" $name) $days -}}
{{- $host := printf "%s.%s.svc" $name .Release.Namespace -}}
{{- $cert := genSignedCert $host nil (list $name (printf "%s.%s" $name .Release.Namespace) $host (printf "%s.cluster.local" $host)) $days $ca -}}
{{- $_ := set $ "tokenRefresherTLS" (dict "ca" $ca.Cert "cert" $cert.Cert "key" $cert.Key) -}}
{{- end -}}
{{- end -}}
{{- toYaml (get $ "tokenRefresherTLS") -}}
{{- end -}}
