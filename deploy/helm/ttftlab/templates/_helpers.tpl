{{/* fullname is the prefix of every object's name. */}}
{{- define "ttftlab.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* labels are the labels every object carries. */}}
{{- define "ttftlab.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selector selects one component's pods; call with (list . "component"). */}}
{{- define "ttftlab.selector" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ $.Chart.Name }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "ttftlab.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "ttftlab.gpunodeImage" -}}
{{- printf "%s:%s" .Values.gpunode.image.repository (default .Chart.AppVersion .Values.gpunode.image.tag) -}}
{{- end -}}

{{- define "ttftlab.secretName" -}}
{{- default (printf "%s-secrets" (include "ttftlab.fullname" .)) .Values.security.existingSecret -}}
{{- end -}}

{{/* join is the coordinator's stable gossip address that agents and gpunodes --join. */}}
{{- define "ttftlab.join" -}}
{{- printf "%s:%d" (include "ttftlab.coordinatorHost" .) (int .Values.ports.gossip) -}}
{{- end -}}

{{/* coordinatorHost is the coordinator pod's stable DNS name (StatefulSet pod 0 under the gossip Service). */}}
{{- define "ttftlab.coordinatorHost" -}}
{{- $f := include "ttftlab.fullname" . -}}
{{- printf "%s-coordinator-0.%s-gossip.%s.svc.%s" $f $f .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/* daemonArgs are the flags every daemon shares: addresses and security. */}}
{{- define "ttftlab.daemonArgs" -}}
- --name=$(POD_NAME)
- --gossip-addr=$(POD_IP):{{ .Values.ports.gossip }}
- --gossip-key-file=/etc/ttftlab/secrets/gossip.key
- --token-file=/etc/ttftlab/secrets/token
{{- if .Values.security.tls.enabled }}
- --tls-dir=/etc/ttftlab/tls
{{- else }}
- --insecure
{{- end }}
{{- if .Values.serviceMonitor.enabled }}
- --metrics-addr=$(POD_IP):{{ .Values.ports.metrics }}
{{- end }}
{{- end -}}

{{/* podEnv gives a container its pod's name and IP. */}}
{{- define "ttftlab.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end -}}

{{/* ports are the daemon's container ports. */}}
{{- define "ttftlab.ports" -}}
- name: grpc
  containerPort: {{ .Values.ports.grpc }}
  protocol: TCP
- name: gossip-tcp
  containerPort: {{ .Values.ports.gossip }}
  protocol: TCP
- name: gossip-udp
  containerPort: {{ .Values.ports.gossip }}
  protocol: UDP
{{- if .Values.serviceMonitor.enabled }}
- name: metrics
  containerPort: {{ .Values.ports.metrics }}
  protocol: TCP
{{- end }}
{{- end -}}

{{/* secretMounts and secretVolumes carry the gossip key, the token and the TLS files. */}}
{{- define "ttftlab.secretMounts" -}}
- name: secrets
  mountPath: /etc/ttftlab/secrets
  readOnly: true
{{- if .Values.security.tls.enabled }}
- name: tls
  mountPath: /etc/ttftlab/tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "ttftlab.secretVolumes" -}}
- name: secrets
  secret:
    secretName: {{ include "ttftlab.secretName" . }}
    defaultMode: 0440
    items:
      - key: gossip.key
        path: gossip.key
      - key: token
        path: token
{{- if .Values.security.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.security.tls.secretName }}
    defaultMode: 0440
    items:
      - key: ca.pem
        path: ca.pem
      - key: node.pem
        path: node.pem
      - key: node-key.pem
        path: node-key.pem
{{- end }}
{{- end -}}

{{/* podSecurity runs the scratch image as an unprivileged user. */}}
{{- define "ttftlab.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "ttftlab.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* waitForCoordinator holds a member until the coordinator's gossip port
answers: ttftlab exits when its first --join fails, and would otherwise
crash-loop (with a growing back-off) while the coordinator starts. */}}
{{- define "ttftlab.waitForCoordinator" -}}
- name: wait-for-coordinator
  image: {{ .Values.initImage }}
  imagePullPolicy: IfNotPresent
  command:
    - sh
    - -c
    - until nc -z -w 2 "$0" "$1"; do echo "waiting for the coordinator's gossip port $0:$1"; sleep 2; done
    - {{ include "ttftlab.coordinatorHost" . }}
    - {{ .Values.ports.gossip | quote }}
  securityContext:
    {{- include "ttftlab.containerSecurity" . | nindent 4 }}
    runAsNonRoot: true
    runAsUser: 65532
{{- end -}}
