{{/* The chart's name, for app.kubernetes.io/name. */}}
{{- define "floodgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The name of floodgate's objects: the release's, unless it lacks the chart's name. */}}
{{- define "floodgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The name of memcached's objects, and of its headless Service. */}}
{{- define "floodgate.memcachedName" -}}
{{- printf "%s-memcached" (include "floodgate.fullname" . | trunc 53 | trimSuffix "-") -}}
{{- end -}}

{{/* floodgate's image tag: image.tag, else the chart's appVersion. */}}
{{- define "floodgate.version" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{/* memcached's version: its image tag without a variant (1.6.38-alpine: 1.6.38). */}}
{{- define "floodgate.memcachedVersion" -}}
{{- splitList "-" .Values.memcached.image.tag | first -}}
{{- end -}}

{{/* What Helm adds to the metadata of every object it manages. */}}
{{- define "floodgate.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* floodgate's selector. */}}
{{- define "floodgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "floodgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* floodgate's recommended labels (pods). */}}
{{- define "floodgate.podLabels" -}}
{{ include "floodgate.selectorLabels" . }}
app.kubernetes.io/component: rate-limiter
app.kubernetes.io/part-of: floodgate
app.kubernetes.io/version: {{ include "floodgate.version" . | quote }}
{{- end -}}

{{/* floodgate's objects' labels. */}}
{{- define "floodgate.labels" -}}
{{ include "floodgate.podLabels" . }}
{{ include "floodgate.helmLabels" . }}
{{- end -}}

{{/* memcached's selector. */}}
{{- define "floodgate.memcachedSelectorLabels" -}}
app.kubernetes.io/name: memcached
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* memcached's recommended labels (pods). */}}
{{- define "floodgate.memcachedPodLabels" -}}
{{ include "floodgate.memcachedSelectorLabels" . }}
app.kubernetes.io/component: cache
app.kubernetes.io/part-of: floodgate
app.kubernetes.io/version: {{ include "floodgate.memcachedVersion" . | quote }}
{{- end -}}

{{/* memcached's objects' labels. */}}
{{- define "floodgate.memcachedLabels" -}}
{{ include "floodgate.memcachedPodLabels" . }}
{{ include "floodgate.helmLabels" . }}
{{- end -}}

{{/* FLOODGATE_MEMCACHE_SERVERS: this release's memcached, found through its headless Service, or memcached.servers. */}}
{{- define "floodgate.memcacheServers" -}}
{{- if .Values.memcached.enabled -}}
{{- printf "dns+%s.%s.svc.%s:11211" (include "floodgate.memcachedName" .) .Release.Namespace .Values.clusterDomain -}}
{{- else -}}
{{- .Values.memcached.servers -}}
{{- end -}}
{{- end -}}
