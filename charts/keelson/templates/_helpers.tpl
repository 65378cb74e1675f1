{{/* Names, labels and the shared pieces every Keelson template uses. */}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "keelson.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name used for every object; 63 characters at most (DNS label). */}}
{{- define "keelson.fullname" -}}
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

{{/* Name of the hook-time objects the migration Job reads (they exist before the release's own). */}}
{{- define "keelson.migrateName" -}}
{{- printf "%s-migrate" (include "keelson.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/* Name of the purge CronJob: 52 characters at most, since its Jobs add an 11-character suffix. */}}
{{- define "keelson.purgeName" -}}
{{- printf "%s-purge" (include "keelson.fullname" . | trunc 46 | trimSuffix "-") }}
{{- end }}

{{- define "keelson.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "keelson.labels" -}}
helm.sh/chart: {{ include "keelson.chart" . }}
{{ include "keelson.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keelson
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that identify this release's objects; stable for the life of the release. */}}
{{- define "keelson.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keelson.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of the Service that exposes only the "metrics" port (what the ServiceMonitor scrapes;
Prometheus Operator makes it the `job` label). */}}
{{- define "keelson.metricsName" -}}
{{- printf "%s-metrics" (include "keelson.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/* The API server pods: what the Service, PDB, NetworkPolicy and ServiceMonitor select. */}}
{{- define "keelson.serverSelectorLabels" -}}
{{ include "keelson.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "keelson.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "keelson.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: repository:tag, or repository@digest when a digest pins it. */}}
{{- define "keelson.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding DATABASE_URL, SECRET_KEY, FIRST_SUPERUSER_PASSWORD (and SMTP_PASSWORD, JWT_PREVIOUS_KEYS). */}}
{{- define "keelson.secretName" -}}
{{- default (include "keelson.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{/*
Non-secret settings, keyed by the service's environment variable names (service/core/config.py).
One definition feeds both the release ConfigMap and the migration hook's own ConfigMap, so the
Job and the pods always see the same configuration.
*/}}
{{- define "keelson.configData" -}}
ENVIRONMENT: {{ .Values.config.environment | quote }}
PROJECT_NAME: {{ .Values.config.projectName | quote }}
DOCS_ENABLED: {{ .Values.config.docsEnabled | quote }}
ACCESS_TOKEN_EXPIRE_MINUTES: {{ .Values.config.accessTokenExpireMinutes | int | quote }}
REFRESH_TOKEN_EXPIRE_DAYS: {{ .Values.config.refreshTokenExpireDays | int | quote }}
EMAIL_RESET_TOKEN_EXPIRE_HOURS: {{ .Values.config.emailResetTokenExpireHours | int | quote }}
JWT_ISSUER: {{ .Values.config.jwtIssuer | quote }}
JWT_AUDIENCE: {{ .Values.config.jwtAudience | quote }}
JWT_KEY_ID: {{ .Values.config.jwtKeyId | quote }}
LOGIN_THROTTLE_WINDOW_S: {{ .Values.config.loginThrottle.windowSeconds | int | quote }}
LOGIN_MAX_FAILURES_PER_ACCOUNT: {{ .Values.config.loginThrottle.maxFailuresPerAccount | int | quote }}
LOGIN_MAX_FAILURES_PER_IP: {{ .Values.config.loginThrottle.maxFailuresPerIp | int | quote }}
TRUSTED_PROXY_CIDRS: {{ join "," .Values.config.trustedProxyCidrs | quote }}
HSTS_ENABLED: {{ .Values.config.hstsEnabled | quote }}
HSTS_MAX_AGE_S: {{ .Values.config.hstsMaxAgeSeconds | int | quote }}
IDEMPOTENCY_KEY_TTL_S: {{ .Values.config.idempotencyKeyTtlSeconds | int | quote }}
MAX_REQUEST_BODY_BYTES: {{ .Values.config.maxRequestBodyBytes | int | quote }}
FIRST_SUPERUSER: {{ .Values.config.firstSuperuser | quote }}
FRONTEND_HOST: {{ .Values.config.frontendHost | quote }}
BACKEND_CORS_ORIGINS: {{ join "," .Values.config.backendCorsOrigins | quote }}
LOG_LEVEL: {{ .Values.config.logLevel | quote }}
LOG_FORMAT: {{ .Values.config.logFormat | quote }}
ACCESS_LOG_ENABLED: {{ .Values.config.accessLogEnabled | quote }}
SERVER_HOST: {{ .Values.server.host | quote }}
SERVER_PORT: {{ .Values.server.port | int | quote }}
METRICS_PORT: {{ .Values.metrics.port | int | quote }}
FORWARDED_ALLOW_IPS: {{ .Values.server.forwardedAllowIps | quote }}
SHUTDOWN_TIMEOUT_S: {{ .Values.lifecycle.shutdownTimeoutSeconds | int | quote }}
READINESS_TIMEOUT_S: {{ .Values.config.readinessTimeoutSeconds | quote }}
DB_POOL_SIZE: {{ .Values.database.poolSize | int | quote }}
DB_MAX_OVERFLOW: {{ .Values.database.maxOverflow | int | quote }}
DB_POOL_OVERFLOW_IDLE_S: {{ .Values.database.poolOverflowIdleSeconds | quote }}
DB_POOL_TIMEOUT_S: {{ .Values.database.poolTimeoutSeconds | quote }}
DB_POOL_RECYCLE_S: {{ .Values.database.poolRecycleSeconds | int | quote }}
DB_POOL_PRE_PING: {{ .Values.database.poolPrePing | quote }}
DB_STATEMENT_TIMEOUT_MS: {{ .Values.database.statementTimeoutMs | int | quote }}
DB_CONNECT_TIMEOUT_S: {{ .Values.database.connectTimeoutSeconds | quote }}
DB_POOLER: {{ .Values.database.pooler.mode | quote }}
MIGRATION_LOCK_TIMEOUT_MS: {{ .Values.migrations.lockTimeoutMs | int | quote }}
ARGON2_MEMORY_KIB: {{ .Values.config.argon2.memoryKib | int | quote }}
ARGON2_TIME_COST: {{ .Values.config.argon2.timeCost | int | quote }}
ARGON2_PARALLELISM: {{ .Values.config.argon2.parallelism | int | quote }}
ARGON2_MAX_CONCURRENCY: {{ .Values.config.argon2.maxConcurrency | int | quote }}
{{- if .Values.smtp.host }}
SMTP_HOST: {{ .Values.smtp.host | quote }}
SMTP_PORT: {{ .Values.smtp.port | int | quote }}
SMTP_USER: {{ .Values.smtp.user | quote }}
SMTP_TLS: {{ .Values.smtp.tls | quote }}
SMTP_SSL: {{ .Values.smtp.ssl | quote }}
SMTP_TIMEOUT_S: {{ .Values.smtp.timeoutSeconds | quote }}
EMAILS_FROM_EMAIL: {{ .Values.smtp.fromEmail | quote }}
EMAILS_FROM_NAME: {{ .Values.smtp.fromName | quote }}
{{- end }}
OTEL_TRACES_EXPORTER: {{ .Values.config.otelTracesExporter | quote }}
OTEL_SERVICE_NAME: {{ .Values.config.otelServiceName | quote }}
{{- range $name, $value := .Values.config.otel }}
{{ $name }}: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* Secret settings (stringData) when the chart manages the Secret, under the secret.keys names. */}}
{{- define "keelson.secretData" -}}
{{- $keys := .Values.secret.keys }}
{{- if .Values.secret.databaseUrl }}
{{ $keys.databaseUrl }}: {{ .Values.secret.databaseUrl | quote }}
{{- end }}
{{ $keys.secretKey }}: {{ .Values.secret.secretKey | quote }}
{{ $keys.firstSuperuserPassword }}: {{ .Values.secret.firstSuperuserPassword | quote }}
{{- if .Values.secret.smtpPassword }}
{{ $keys.smtpPassword }}: {{ .Values.secret.smtpPassword | quote }}
{{- end }}
{{- if .Values.secret.jwtPreviousKeys }}
{{ $keys.jwtPreviousKeys }}: {{ .Values.secret.jwtPreviousKeys | quote }}
{{- end }}
{{- if .Values.secret.migrationDatabaseUrl }}
{{ $keys.migrationDatabaseUrl }}: {{ .Values.secret.migrationDatabaseUrl | quote }}
{{- end }}
{{- end }}

{{/*
Environment of every keelson container: the ConfigMap wholesale, then each secret key by name
(so a missing required key in an existingSecret is an error the kubelet reports, not a silent
default; SMTP_PASSWORD, JWT_PREVIOUS_KEYS and MIGRATION_DATABASE_URL are optional). Key names
follow secret.keys; DATABASE_URL may come from another Secret (database.urlSecret, e.g.
CloudNativePG's <cluster>-app key uri). MIGRATION_DATABASE_URL reaches the migration Job only.
Call with (dict "root" $ "configMap" NAME "secret" NAME ["migration" true]).
*/}}
{{- define "keelson.env" -}}
{{- $v := .root.Values }}
{{- $keys := $v.secret.keys }}
envFrom:
  - configMapRef:
      name: {{ .configMap }}
  {{- with $v.extraEnvFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
env:
  - name: DATABASE_URL
    valueFrom:
      secretKeyRef:
        {{- if $v.database.urlSecret.name }}
        name: {{ $v.database.urlSecret.name }}
        key: {{ $v.database.urlSecret.key }}
        {{- else }}
        name: {{ .secret }}
        key: {{ $keys.databaseUrl }}
        {{- end }}
  {{- if .migration }}
  - name: MIGRATION_DATABASE_URL
    valueFrom:
      secretKeyRef:
        {{- if $v.database.migrationUrlSecret.name }}
        name: {{ $v.database.migrationUrlSecret.name }}
        key: {{ $v.database.migrationUrlSecret.key }}
        {{- else }}
        name: {{ .secret }}
        key: {{ $keys.migrationDatabaseUrl }}
        optional: true
        {{- end }}
  {{- end }}
  - name: SECRET_KEY
    valueFrom:
      secretKeyRef:
        name: {{ .secret }}
        key: {{ $keys.secretKey }}
  - name: FIRST_SUPERUSER_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ .secret }}
        key: {{ $keys.firstSuperuserPassword }}
  - name: SMTP_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ .secret }}
        key: {{ $keys.smtpPassword }}
        optional: true
  - name: JWT_PREVIOUS_KEYS
    valueFrom:
      secretKeyRef:
        name: {{ .secret }}
        key: {{ $keys.jwtPreviousKeys }}
        optional: true
  {{- with $v.database.tls.sslmode }}
  # libpq's variables, which asyncpg reads when DATABASE_URL sets no ssl= of its own.
  - name: PGSSLMODE
    value: {{ . | quote }}
  {{- end }}
  {{- if $v.database.tls.caSecret.name }}
  - name: PGSSLROOTCERT
    value: /etc/keelson/db-ca/ca.crt
  {{- end }}
  {{- with $v.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
Pod-level settings of a Job's pods, falling back to the server pods' (the Airflow chart's
shape): annotations and labels are the global ones merged with the Job's own (the Job's win, so
`sidecar.istio.io/inject: "false"` can switch a mesh sidecar off for a pod that must exit);
affinity, nodeSelector, tolerations and priorityClassName are the Job's when set, else the
global ones. Call with (dict "root" $ "job" .Values.migrations).
*/}}
{{- define "keelson.jobPodAnnotations" -}}
{{- $merged := merge (deepCopy (.job.podAnnotations | default dict)) (deepCopy (.root.Values.podAnnotations | default dict)) }}
{{- with $merged }}{{ toYaml . }}{{ end }}
{{- end }}

{{- define "keelson.jobPodLabels" -}}
{{- $merged := merge (deepCopy (.job.podLabels | default dict)) (deepCopy (.root.Values.podLabels | default dict)) }}
{{- with $merged }}{{ toYaml . }}{{ end }}
{{- end }}

{{- define "keelson.jobPodScheduling" -}}
{{- with (.job.priorityClassName | default .root.Values.priorityClassName) }}
priorityClassName: {{ . }}
{{- end }}
{{- with (.job.nodeSelector | default .root.Values.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.job.affinity | default .root.Values.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.job.tolerations | default .root.Values.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A Job's container resources: its own when set, else the server pods'. */}}
{{- define "keelson.jobResources" -}}
{{- toYaml (.job.resources | default .root.Values.resources) }}
{{- end }}

{{/*
ServiceAccount of the migration hook: its own hook-time copy (with serviceAccount.annotations,
so workload identity works in the hook too) when the chart creates ServiceAccounts, else the
existing one named by serviceAccount.name, which must exist before the install.
*/}}
{{- define "keelson.migrateServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}{{ include "keelson.migrateName" . }}{{ else }}{{ include "keelson.serviceAccountName" . }}{{ end }}
{{- end }}

{{/* Volumes of every keelson pod: the writable /tmp, plus extraVolumes. */}}
{{- define "keelson.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- with .Values.database.tls.caSecret }}
{{- if .name }}
# The CA that signed PostgreSQL's certificate (PGSSLROOTCERT points at it).
- name: db-ca
  secret:
    secretName: {{ .name }}
    items:
      - key: {{ .key }}
        path: ca.crt
{{- end }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volume mounts of every keelson container: /tmp, the database CA, plus extraVolumeMounts. */}}
{{- define "keelson.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.database.tls.caSecret.name }}
- name: db-ca
  mountPath: /etc/keelson/db-ca
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Container security context shared by the server, the migration Job, the purge CronJob and the test pod. */}}
{{- define "keelson.containerSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/* Pod security context shared by every keelson pod. */}}
{{- define "keelson.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{/* Most server pods outside a rollout: autoscaling.maxReplicas, or replicaCount without autoscaling. */}}
{{- define "keelson.maxReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.maxReplicas | int }}{{ else }}{{ .Values.replicaCount | int }}{{ end }}
{{- end }}

{{/* rollingUpdate.maxSurge as a pod count: a percentage of maxReplicas rounds up, as Kubernetes does. */}}
{{- define "keelson.maxSurge" -}}
{{- include "keelson.scaledCount" (dict "value" .Values.rollingUpdate.maxSurge "of" (include "keelson.maxReplicas" . | int) "roundUp" true) }}
{{- end }}

{{/* rollingUpdate.maxUnavailable as a pod count: a percentage rounds down, as Kubernetes does. */}}
{{- define "keelson.maxUnavailable" -}}
{{- include "keelson.scaledCount" (dict "value" .Values.rollingUpdate.maxUnavailable "of" (include "keelson.maxReplicas" . | int) "roundUp" false) }}
{{- end }}

{{/* An int-or-percent value as a count of "of" pods. Call with (dict "value" V "of" N "roundUp" BOOL). */}}
{{- define "keelson.scaledCount" -}}
{{- if kindIs "string" .value }}
{{- $pct := trimSuffix "%" .value | int }}
{{- if .roundUp }}{{ div (add (mul .of $pct) 99) 100 }}{{ else }}{{ div (mul .of $pct) 100 }}{{ end }}
{{- else }}
{{- .value | int }}
{{- end }}
{{- end }}

{{/*
Old pods still terminating during a rollout, each holding its pool until it exits (preStop, then
graceful shutdown: at most terminationGracePeriodSeconds G). Terminating pods do not count
against maxSurge, so the Deployment controller replaces them at once. It takes old pods down in
steps of at most maxSurge + maxUnavailable, the first maxUnavailable at once and each later step
only once new pods are available, i.e. minReadySeconds M after they became ready: steps are at
least M apart, so within any G seconds at most ceil(G / M) steps overlap. Without
minReadySeconds nothing bounds the pace and every old pod may be terminating at once.
*/}}
{{- define "keelson.terminatingPods" -}}
{{- $replicas := include "keelson.maxReplicas" . | int }}
{{- $surge := include "keelson.maxSurge" . | int }}
{{- $unavailable := include "keelson.maxUnavailable" . | int }}
{{- $grace := include "keelson.terminationGracePeriodSeconds" . | int }}
{{- $minReady := .Values.minReadySeconds | int }}
{{- if gt $minReady 0 }}
{{- $steps := div (add $grace $minReady -1) $minReady }}
{{- min $replicas (add $unavailable (mul (add $surge $unavailable) $steps)) }}
{{- else }}
{{- $replicas }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds = preStop sleep + SHUTDOWN_TIMEOUT_S + margin (see docs/kubernetes.md). */}}
{{- define "keelson.terminationGracePeriodSeconds" -}}
{{- add .Values.lifecycle.preStopSleepSeconds .Values.lifecycle.shutdownTimeoutSeconds .Values.lifecycle.terminationMarginSeconds }}
{{- end }}

{{/*
Checks that a schema cannot express; each fails the render with the arithmetic behind it.
Included once, from deployment.yaml.
*/}}
{{- define "keelson.validate" -}}
{{- include "keelson.validatePoolBudget" . }}
{{- if eq (.Values.metrics.port | int) (.Values.server.port | int) }}
{{- fail (printf "metrics.port (%d) must differ from server.port: the metrics never share the API port the Ingress routes" (.Values.metrics.port | int)) }}
{{- end }}
{{- include "keelson.validateSecrets" . }}
{{- if le (.Values.probes.readiness.timeoutSeconds | float64) (.Values.config.readinessTimeoutSeconds | float64) }}
{{- fail (printf "probes.readiness.timeoutSeconds (%v) must be greater than config.readinessTimeoutSeconds (%v): the probe would time out before /readyz answers" .Values.probes.readiness.timeoutSeconds .Values.config.readinessTimeoutSeconds) }}
{{- end }}
{{- if and (eq (include "keelson.maxSurge" . | int) 0) (eq (include "keelson.maxUnavailable" . | int) 0) }}
{{- fail (printf "rollingUpdate.maxSurge (%v) and rollingUpdate.maxUnavailable (%v) are both 0 pods at %s replicas: the rollout could never replace a pod; allow at least one surge pod" .Values.rollingUpdate.maxSurge .Values.rollingUpdate.maxUnavailable (include "keelson.maxReplicas" .)) }}
{{- end }}
{{- include "keelson.validatePdb" . }}
{{- if le (.Values.progressDeadlineSeconds | int) (.Values.minReadySeconds | int) }}
{{- fail (printf "progressDeadlineSeconds (%d) must exceed minReadySeconds (%d): every rollout would be reported failed" (.Values.progressDeadlineSeconds | int) (.Values.minReadySeconds | int)) }}
{{- end }}
{{- include "keelson.validateScrape" . }}
{{- if and .Values.autoscaling.enabled (gt (.Values.autoscaling.minReplicas | int) (.Values.autoscaling.maxReplicas | int)) }}
{{- fail (printf "autoscaling.minReplicas (%d) must not exceed autoscaling.maxReplicas (%d)" (.Values.autoscaling.minReplicas | int) (.Values.autoscaling.maxReplicas | int)) }}
{{- end }}
{{- end }}

{{/*
Connections the purge Jobs hold while they run: `keelson purge-expired` opens one session at a
time (batch, commit, next batch), so one per Job. concurrencyPolicy Forbid keeps scheduled runs
apart, but a manual `kubectl create job --from=cronjob/...` is a Job of its own that the policy
never sees, so it can run beside a scheduled one: two. 0 when purge.enabled is false.
*/}}
{{- define "keelson.purgeConnections" -}}
{{- ternary 2 0 .Values.purge.enabled }}
{{- end }}

{{/*
Connection-pool budget: everything that can hold connections at the same moment must fit in
what PostgreSQL accepts minus what is reserved for others. Each server pod opens up to
DB_POOL_SIZE + DB_MAX_OVERFLOW. At the peak of a rollout at full scale there are maxReplicas
pods, maxSurge new ones, and the old ones still terminating (keelson.terminatingPods); the
migration hook Job holds its own; the purge Jobs theirs. docs/kubernetes.md shows the arithmetic.
*/}}
{{- define "keelson.validatePoolBudget" -}}
{{- $replicas := include "keelson.maxReplicas" . | int }}
{{- $surge := include "keelson.maxSurge" . | int }}
{{- $terminating := include "keelson.terminatingPods" . | int }}
{{- $pool := .Values.database.poolSize | int }}
{{- $overflow := .Values.database.maxOverflow | int }}
{{- $job := ternary (.Values.migrations.dbConnections | int) 0 .Values.migrations.enabled }}
{{- $purge := include "keelson.purgeConnections" . | int }}
{{- $pods := add $replicas $surge $terminating }}
{{- $servers := mul $pods (add $pool $overflow) }}
{{- $max := .Values.database.maxConnections | int }}
{{- $reserved := .Values.database.reservedConnections | int }}
{{- $budget := sub $max $reserved }}
{{- $explained := include "keelson.terminatingExplained" . }}
{{- if eq .Values.database.pooler.mode "pgbouncer" }}
{{- /*
Behind a transaction-mode pooler the servers and purge Jobs are the pooler's clients; PostgreSQL
sees only the pooler's server pools, plus the migration Job, which connects directly
(MIGRATION_DATABASE_URL: session advisory locks and DDL do not belong behind a transaction pooler).
*/}}
{{- $p := .Values.database.pooler }}
{{- $clients := add $servers $purge }}
{{- if gt $clients ($p.maxClientConnections | int) }}
{{- fail (printf "pooler client budget exceeded: (maxReplicas %d + maxSurge %d + terminating %d) * (poolSize %d + maxOverflow %d) + purge jobs %d = %d > database.pooler.maxClientConnections %d (one pooler pod must take every client when another goes away); terminating = %s" $replicas $surge $terminating $pool $overflow $purge $clients ($p.maxClientConnections | int) $explained) }}
{{- end }}
{{- $serverSide := add (mul ($p.instances | int) ($p.serverPoolSize | int)) $job }}
{{- if gt $serverSide $budget }}
{{- fail (printf "connection pool budget exceeded: database.pooler.instances %d * database.pooler.serverPoolSize %d + migration job %d = %d > database.maxConnections %d - database.reservedConnections %d = %d; lower the pooler's pool or instances, or raise database.maxConnections" ($p.instances | int) ($p.serverPoolSize | int) $job $serverSide $max $reserved $budget) }}
{{- end }}
{{- else }}
{{- $demand := add $servers $job $purge }}
{{- if gt $demand $budget }}
{{- fail (printf "connection pool budget exceeded: (maxReplicas %d + maxSurge %d + terminating %d) * (poolSize %d + maxOverflow %d) + migration job %d + purge jobs %d = %d > database.maxConnections %d - database.reservedConnections %d = %d; terminating = %s; lower autoscaling.maxReplicas/replicaCount, rollingUpdate.maxSurge, database.poolSize or database.maxOverflow, raise minReadySeconds, or raise database.maxConnections" $replicas $surge $terminating $pool $overflow $job $purge $demand $max $reserved $budget $explained) }}
{{- end }}
{{- end }}
{{- if and .Values.database.pooler.cloudnativepg.enabled (ne .Values.database.pooler.mode "pgbouncer") }}
{{- fail "database.pooler.cloudnativepg.enabled renders a transaction-mode PgBouncer: set database.pooler.mode=pgbouncer so Keelson behaves correctly behind it" }}
{{- end }}
{{- if and .Values.database.pooler.cloudnativepg.enabled (not .Values.database.pooler.cloudnativepg.cluster) }}
{{- fail "database.pooler.cloudnativepg.cluster is required: the name of the CloudNativePG Cluster the Pooler fronts" }}
{{- end }}
{{- end }}

{{/* How the terminating-pod count came about, for the budget's failure message. */}}
{{- define "keelson.terminatingExplained" -}}
{{- $grace := include "keelson.terminationGracePeriodSeconds" . | int }}
{{- $minReady := .Values.minReadySeconds | int }}
{{- if gt $minReady 0 -}}
min(maxReplicas {{ include "keelson.maxReplicas" . }}, maxUnavailable {{ include "keelson.maxUnavailable" . }} + (maxSurge {{ include "keelson.maxSurge" . }} + maxUnavailable {{ include "keelson.maxUnavailable" . }}) * ceil(terminationGracePeriodSeconds {{ $grace }} / minReadySeconds {{ $minReady }}))
{{- else -}}
maxReplicas {{ include "keelson.maxReplicas" . }} (minReadySeconds 0 does not bound how many old pods terminate at once)
{{- end }}
{{- end }}

{{/* The chart-managed Secret needs real values; the service refuses weak ones outside ENVIRONMENT=local. */}}
{{- define "keelson.validateSecrets" -}}
{{- if not .Values.secret.existingSecret }}
{{- if and (not .Values.secret.databaseUrl) (not .Values.database.urlSecret.name) }}
{{- fail "secret.databaseUrl is required (postgresql://USER:PASSWORD@HOST:5432/DB), or set database.urlSecret to the Secret holding it, or secret.existingSecret to a Secret with DATABASE_URL, SECRET_KEY and FIRST_SUPERUSER_PASSWORD" }}
{{- end }}
{{- if not .Values.secret.secretKey }}
{{- fail "secret.secretKey is required (generate one: python -c 'import secrets; print(secrets.token_urlsafe(48))'), or set secret.existingSecret" }}
{{- end }}
{{- if not .Values.secret.firstSuperuserPassword }}
{{- fail "secret.firstSuperuserPassword is required (8 to 128 characters), or set secret.existingSecret" }}
{{- end }}
{{- if and (ne .Values.config.environment "local") (lt (len .Values.secret.secretKey) 32) }}
{{- fail (printf "secret.secretKey must be at least 32 characters when config.environment=%s (the service refuses shorter keys)" .Values.config.environment) }}
{{- end }}
{{- include "keelson.validatePreviousKeys" . }}
{{- end }}
{{- end }}

{{/*
secret.jwtPreviousKeys in its comma-separated form: each entry "kid:secret" (split at the first
colon, as the service does) or a bare key needs 32 characters outside ENVIRONMENT=local, or the
new pods would refuse to start mid-rollout. The JSON forms are left to the service's own check.
The key itself is never printed.
*/}}
{{- define "keelson.validatePreviousKeys" -}}
{{- $raw := trim .Values.secret.jwtPreviousKeys }}
{{- if and (ne .Values.config.environment "local") $raw (not (hasPrefix "[" $raw)) (not (hasPrefix "{" $raw)) }}
{{- $index := 0 }}
{{- range $entry := splitList "," $raw }}
{{- if trim $entry }}
{{- $key := regexSplit ":" (trim $entry) 2 | last | trim }}
{{- if lt (len $key) 32 }}
{{- fail (printf "secret.jwtPreviousKeys entry %d: the key must be at least 32 characters when config.environment=%s (the service refuses shorter keys)" $index $.Values.config.environment) }}
{{- end }}
{{- $index = add1 $index }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Egress every keelson pod needs, shared by the release's NetworkPolicy and the migration hook's:
DNS on port 53 to any destination (NodeLocal DNSCache and OpenShift's resolver are not the
kube-dns pods, so pinning their labels breaks resolution) and PostgreSQL.
*/}}
{{- define "keelson.commonEgress" -}}
{{- $np := .Values.networkPolicy -}}
# Cluster DNS, wherever the node's resolver points.
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
  {{- with $np.dns.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
# PostgreSQL (or the pooler in front of it).
- ports:
    - port: {{ $np.database.port }}
      protocol: TCP
  {{- if or $np.database.cidrs $np.database.to }}
  to:
    {{- range $np.database.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
    {{- with $np.database.to }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}

{{/*
A PodDisruptionBudget that allows no disruption blocks every node drain forever (kubectl drain
and cluster upgrades wait on it). Kubernetes rounds a percentage maxUnavailable up.
*/}}
{{- define "keelson.validatePdb" -}}
{{- $replicas := ternary .Values.autoscaling.minReplicas .Values.replicaCount .Values.autoscaling.enabled | int }}
{{- if and .Values.podDisruptionBudget.enabled (gt $replicas 1) }}
{{- $allowed := include "keelson.scaledCount" (dict "value" .Values.podDisruptionBudget.maxUnavailable "of" $replicas "roundUp" true) | int }}
{{- if lt $allowed 1 }}
{{- fail (printf "podDisruptionBudget.maxUnavailable (%v) allows no disruption at %d replicas: node drains would block forever; use at least 1" .Values.podDisruptionBudget.maxUnavailable $replicas) }}
{{- end }}
{{- end }}
{{- end }}

{{/* A Prometheus duration ("1m30s", "500ms") in milliseconds. */}}
{{- define "keelson.durationMs" -}}
{{- $units := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 "d" 86400000 "w" 604800000 "y" 31536000000 }}
{{- $total := 0 }}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d|w|y)" . -1 }}
{{- $unit := regexFind "(ms|s|m|h|d|w|y)$" . }}
{{- $total = add $total (mul (trimSuffix $unit . | int64) (get $units $unit)) }}
{{- end }}
{{- $total }}
{{- end }}

{{/* Prometheus refuses a scrape config whose timeout is not below its interval. */}}
{{- define "keelson.validateScrape" -}}
{{- $sm := .Values.metrics.serviceMonitor }}
{{- if $sm.enabled }}
{{- $interval := include "keelson.durationMs" $sm.interval | int64 }}
{{- $timeout := include "keelson.durationMs" $sm.scrapeTimeout | int64 }}
{{- if ge $timeout $interval }}
{{- fail (printf "metrics.serviceMonitor.scrapeTimeout (%s) must be shorter than metrics.serviceMonitor.interval (%s): Prometheus refuses the scrape config" $sm.scrapeTimeout $sm.interval) }}
{{- end }}
{{- end }}
{{- end }}
