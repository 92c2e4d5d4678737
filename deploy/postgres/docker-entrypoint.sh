#!/usr/bin/env bash
# docker-entrypoint.sh starts PostgreSQL in the image built by build-image.sh.
# It follows the official postgres image's contract as far as Gatehouse uses it:
#
#   POSTGRES_USER              superuser name (default postgres)
#   POSTGRES_PASSWORD          its password; required unless
#   POSTGRES_HOST_AUTH_METHOD  is "trust" (default scram-sha-256)
#   POSTGRES_DB                database created at first start (default $POSTGRES_USER)
#   POSTGRES_INITDB_ARGS       extra initdb arguments, split on blanks (e.g. --no-sync)
#   PGDATA                     data directory (default /var/lib/postgresql/data)
#   /docker-entrypoint-initdb.d/*.sql, *.sh
#                              run once, in name order, on an empty PGDATA
#
# On an empty PGDATA it runs initdb and the init scripts against a temporary
# server that listens on the Unix socket only, with its log kept in a file
# (printed only if initialisation fails). So a TCP connection succeeds, and the
# line "database system is ready to accept connections" appears on stdout, only
# once the final server is up. Still, wait for readiness with a real SQL ping:
# the official image prints that line twice, once for its temporary server.
set -euo pipefail

export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export POSTGRES_USER="${POSTGRES_USER:-postgres}"
export POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
export POSTGRES_HOST_AUTH_METHOD="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
socket_dir=/var/run/postgresql

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*" >&2; }

# Flags only, as in `docker run IMAGE -c fsync=off`: they are postgres's.
if [[ $# -eq 0 || ${1:0:1} == - ]]; then
	set -- postgres "$@"
fi
# Any other command (psql, bash, ...) runs as given.
if [[ $1 != postgres ]]; then
	exec "$@"
fi

# As root: make the directories postgres needs, then drop to the postgres user
# (postgres refuses to run as root) and start over.
if [[ $(id -u) -eq 0 ]]; then
	mkdir -p "$PGDATA" "$socket_dir"
	chown postgres:postgres "$PGDATA" "$socket_dir"
	chmod 0700 "$PGDATA"
	chmod 2775 "$socket_dir"
	exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [[ ! -s $PGDATA/PG_VERSION ]]; then
	if [[ -z ${POSTGRES_PASSWORD:-} && $POSTGRES_HOST_AUTH_METHOD != trust ]]; then
		cat >&2 <<-'EOF'
			Error: the database is uninitialized and POSTGRES_PASSWORD is not set.
			       Set POSTGRES_PASSWORD to the superuser's password, or set
			       POSTGRES_HOST_AUTH_METHOD=trust to allow every connection
			       without a password (never do that outside a test).
		EOF
		exit 1
	fi

	log "initializing $PGDATA (superuser $POSTGRES_USER, host auth $POSTGRES_HOST_AUTH_METHOD)"
	initdb_args=(--username="$POSTGRES_USER" --encoding=UTF8 --locale=C.UTF-8
		--auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD")
	# Split on blanks like the official image does, without glob expansion.
	read -r -a extra_args <<<"${POSTGRES_INITDB_ARGS:-}"
	initdb_args+=("${extra_args[@]}")
	if [[ -n ${POSTGRES_PASSWORD:-} ]]; then
		# On stdin, so the password shows up in no process list.
		printf '%s\n' "$POSTGRES_PASSWORD" | initdb "${initdb_args[@]}" --pwfile=/dev/stdin >/dev/null
	else
		initdb "${initdb_args[@]}" >/dev/null
	fi
	printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
	printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

	init_log="$(mktemp /tmp/postgres-init.XXXXXX.log)"
	fail_init() {
		log "initialization failed; temporary server log:"
		cat "$init_log" >&2
	}
	trap fail_init ERR
	# The temporary server gets the final server's flags too (as in the
	# official image: -c fsync=off speeds up CREATE DATABASE), then ours,
	# which win: no TCP until the init scripts are done.
	temp_options=""
	if [[ $# -gt 1 ]]; then
		temp_options="$(printf '%q ' "${@:2}")"
	fi
	temp_options+="-c listen_addresses='' -c unix_socket_directories=$socket_dir"
	pg_ctl --silent --wait --log="$init_log" --options="$temp_options" start

	export PGPASSWORD="${PGPASSWORD:-${POSTGRES_PASSWORD:-}}"
	psql_cmd=(psql --no-psqlrc --quiet --no-password --set=ON_ERROR_STOP=1
		--host="$socket_dir" --username="$POSTGRES_USER")
	if [[ $POSTGRES_DB != postgres ]]; then
		log "creating database $POSTGRES_DB"
		"${psql_cmd[@]}" --dbname=postgres --set=db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
	fi
	shopt -s nullglob
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
		*.sql)
			log "running $f"
			"${psql_cmd[@]}" --dbname="$POSTGRES_DB" --file="$f"
			;;
		*.sh)
			log "running $f"
			if [[ -x $f ]]; then
				"$f"
			else
				# shellcheck source=/dev/null
				. "$f"
			fi
			;;
		*) log "ignoring $f" ;;
		esac
	done

	pg_ctl --silent --wait --mode=fast stop
	trap - ERR
	rm -f "$init_log"
	unset PGPASSWORD
	log "initialization complete; starting postgres"
fi

exec "$@"
