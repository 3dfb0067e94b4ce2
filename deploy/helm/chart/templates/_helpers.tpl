{{/* The application name: app.kubernetes.io/name. */}}
{{- define "deltaeds.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The objects' name: the release name, prefixed to the chart name unless it contains it. */}}
{{- define "deltaeds.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Labels of every object: those of the kustomize base in deploy/ (so both render the same objects),
and commonLabels.
*/}}
{{- define "deltaeds.labels" -}}
app.kubernetes.io/name: {{ include "deltaeds.name" . }}
app.kubernetes.io/part-of: deltaeds
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pods' selector. */}}
{{- define "deltaeds.selectorLabels" -}}
app.kubernetes.io/name: {{ include "deltaeds.name" . }}
{{- end }}

{{- define "deltaeds.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "deltaeds.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The port of a HOST:PORT listen address. */}}
{{- define "deltaeds.port" -}}
{{- $port := regexReplaceAll "^.*:" . "" }}
{{- if not (regexMatch "^[0-9]+$" $port) }}
{{- fail (printf "listen address %q: want HOST:PORT" .) }}
{{- end }}
{{- $port | int }}
{{- end }}

{{- define "deltaeds.xdsPort" -}}
{{- include "deltaeds.port" (required "serve.xdsAddress is required" .Values.serve.xdsAddress) }}
{{- end }}

{{- define "deltaeds.adminPort" -}}
{{- include "deltaeds.port" (required "serve.adminAddress is required (the probes use it)" .Values.serve.adminAddress) }}
{{- end }}

{{/* One flag value as the binary parses it: whole numbers without an exponent. */}}
{{- define "deltaeds.flagValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- printf "%.0f" . }}
{{- else }}
{{- printf "%v" . }}
{{- end }}
{{- end }}

{{/* Nodes get/list/watch is granted: asked for, or needed by a serve flag. */}}
{{- define "deltaeds.readNodes" -}}
{{- if and .Values.rbac.create (or .Values.rbac.nodes .Values.serve.nodeLocality .Values.serve.zoneFromNode) }}true{{ end }}
{{- end }}

{{/* Services get/list/watch is granted: asked for, or needed by a serve flag. */}}
{{- define "deltaeds.readServices" -}}
{{- if and .Values.rbac.create (or .Values.rbac.services .Values.serve.internalTrafficPolicy) }}true{{ end }}
{{- end }}

{{/* The args of `deltaeds serve` (the image's entrypoint), one per serve value not null or false. */}}
{{- define "deltaeds.args" -}}
{{- $serve := deepCopy .Values.serve }}
{{- if .Values.tls.enabled }}
{{- range $k := list "tlsCertFile" "tlsKeyFile" "tlsClientCaFile" }}
{{- if index $serve $k }}
{{- fail (printf "serve.%s: leave it empty when tls.enabled (the chart sets it from the mounted Secret)" $k) }}
{{- end }}
{{- end }}
{{- $_ := set $serve "tlsCertFile" (printf "%s/tls.crt" $.Values.tls.mountPath) }}
{{- $_ := set $serve "tlsKeyFile" (printf "%s/tls.key" $.Values.tls.mountPath) }}
{{- if .Values.tls.mutual }}
{{- $_ := set $serve "tlsClientCaFile" (printf "%s/ca.crt" $.Values.tls.mountPath) }}
{{- end }}
{{- end }}
{{- range $k, $v := $serve }}
{{- $flag := kebabcase $k }}
{{- if kindIs "slice" $v }}
{{- range $v }}
- {{ printf "--%s=%s" $flag (include "deltaeds.flagValue" .) | quote }}
{{- end }}
{{- else if kindIs "bool" $v }}
{{- if $v }}
- {{ printf "--%s" $flag | quote }}
{{- end }}
{{- else if not (kindIs "invalid" $v) }}
- {{ printf "--%s=%s" $flag (include "deltaeds.flagValue" $v) | quote }}
{{- end }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
