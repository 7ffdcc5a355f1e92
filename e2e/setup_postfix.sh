# shellcheck shell=bash
# e2e/setup_postfix.sh: the scenario setup_postfix: "onionmx setup postfix"
# against a third, fresh Postfix instance ($WORK/setup), which it starts,
# sends through over the private Tor network, and stops again:
#   - --dry-run changes nothing;
#   - setup: postconf has nothing to warn about, the checks see Tor's
#     SocksPort, ExtendedErrors and the user= account;
#   - a second setup, with Postfix running, changes nothing and the lookup
#     service answers through Postfix (postmap -q);
#   - mail to an SRV domain, to a domain pinned in the static map setup
#     made, and to a bare onion address is delivered by onionmx;
#   - --remove refuses while mail for an onion waits in the queue;
#   - --remove, with Postfix running, leaves main.cf and master.cf byte for
#     byte as they were (cmp), keeps the static map that now has an entry;
#   - setup on the running Postfix reloads it and the lookup answers;
#     --remove again: the same bytes; one more --remove has nothing to do.
# Sourced by run.sh after scenarios.sh.

SCENARIOS+=(setup_postfix)
SCENARIO_DESC[setup_postfix]="   setup postfix: delivers; again: no change; --remove: same bytes"

# setup_run ARG...: onionmx setup postfix ARG... on the instance; sets
# SETUP_RC and SETUP_OUT (stdout and stderr) and shows them.
setup_run() {
	SETUP_OUT=$("$WORK/onionmx" setup postfix "$@" </dev/null 2>&1)
	SETUP_RC=$?
	say "  onionmx setup postfix $* -> exit $SETUP_RC:"
	sed 's/^/    | /' <<<"$SETUP_OUT" | cut -c1-300 >&2
}

# setup_says REGEX: a line of the last setup_run's output matches REGEX.
setup_says() {
	grep -qE -- "$1" <<<"$SETUP_OUT" || fail "onionmx setup postfix did not say /$1/" || return 1
}

# setup_same A B WHAT: files A and B are the same bytes.
setup_same() {
	cmp -s "$1" "$2" || {
		diff "$2" "$1" | head -20 | sed 's/^/    /' >&2
		fail "$3: $1 is not byte for byte $2"
		return 1
	}
}

scenario_setup_postfix() {
	local dir=$WORK/setup conf t line rcpt
	conf=$dir/etc
	# The mail helpers (mail_send, wait_status, queue_*) work on
	# $SEND_DIR: this instance, in this scenario's subshell only.
	SEND_DIR=$dir
	pf_common "$dir" setup.onionmx.test
	cat >>"$conf/main.cf" <<-EOF
		mydestination = localhost
		virtual_mailbox_domains = setup.onionmx.test
		master_service_disable = inet
		default_transport = smtp:[127.0.0.1]:$RECV_SMTP_PORT
		delay_warning_time = 0
	EOF
	printf 'alice@setup.onionmx.test alice/\n' >"$conf/vmailbox"
	cp "$PF_DIST_MASTER" "$conf/master.cf"
	mkdir -p "$dir/before"
	cp "$conf/main.cf" "$conf/master.cf" "$dir/before/"
	local args=(-c "$conf" --user nobody --binary "$WORK/onionmx" --socks "127.0.0.1:$TOR_SOCKS_PORT"
		--dns "127.0.0.1:$DNS_PORT" --self setup.onionmx.test)

	setup_run "${args[@]}" --dry-run
	((SETUP_RC == 0)) || fail "--dry-run exited $SETUP_RC" || return 1
	setup_says "^  postconf -c $conf -M 'onionmx/unix=" || return 1
	setup_says "^  postconf -c $conf -e 'transport_maps = hash:$conf/onionmx_transport, socketmap:unix:private/onionmx-lookup:onionmx'" || return 1
	setup_same "$conf/main.cf" "$dir/before/main.cf" "--dry-run" || return 1
	setup_same "$conf/master.cf" "$dir/before/master.cf" "--dry-run" || return 1
	[[ ! -e $conf/onionmx_transport && ! -e $conf/onionmx-setup.state ]] || fail "--dry-run made files: $(ls "$conf")" || return 1

	setup_run "${args[@]}"
	((SETUP_RC == 0)) || fail "setup exited $SETUP_RC" || return 1
	setup_says "^onionmx setup postfix: changed $conf:" || return 1
	setup_says "^ok: Tor SocksPort 127\.0\.0\.1:$TOR_SOCKS_PORT answers SOCKS5" || return 1
	setup_says "^ok: ExtendedErrors is on" || return 1
	setup_says "^ok: user= account nobody exists" || return 1
	setup_says "^not checked: the lookup service: Postfix \($conf\) is not running" || return 1
	line=$({
		postconf -c "$conf" -n >/dev/null
		postconf -c "$conf" -M >/dev/null
		postconf -c "$conf" -P >/dev/null
	} 2>&1)
	[[ -z $line ]] || fail "postconf warns after setup: $line" || return 1
	cp "$conf/main.cf" "$dir/main.cf.setup"
	cp "$conf/master.cf" "$dir/master.cf.setup"

	pf_start "$dir"
	setup_run "${args[@]}"
	((SETUP_RC == 0)) || fail "the second setup exited $SETUP_RC" || return 1
	setup_says "^onionmx setup postfix: nothing to change in $conf: onionmx is set up\$" || return 1
	setup_says "^ok: the lookup service answers through Postfix: postmaster@[a-z2-7]{56}\.onion -> onionmx:\[[a-z2-7]{56}\.onion\]:25\$" || return 1
	setup_same "$conf/main.cf" "$dir/main.cf.setup" "the second setup" || return 1
	setup_same "$conf/master.cf" "$dir/master.cf.setup" "the second setup" || return 1

	# Deliveries over Tor: an SRV domain through the lookup service, a
	# domain pinned in the static map setup made, a bare onion.
	printf '%s\tonionmx:[%s]:25\n' "$PF_PINNED_DOMAIN" "$TOR_ONION" >>"$conf/onionmx_transport"
	postmap -c "$conf" "hash:$conf/onionmx_transport" || fail "postmap of the static map failed" || return 1
	for rcpt in bob@recv.onionmx.test "bob@$PF_PINNED_DOMAIN" "bob@$TOR_ONION"; do
		t=$(mail_send alice@setup.onionmx.test "$rcpt") || return 1
		line=$(wait_status "$t" "$rcpt" sent 120) || fail "$rcpt: not delivered" || return 1
		check_sent "$line" "$t" >/dev/null || return 1
		mailbox_one bob "$t" >/dev/null || return 1
		say "  $rcpt: delivered by onionmx over Tor: ${line##*status=}"
	done
	queue_wait_empty 15 || fail "mail left in $dir's queue" || return 1

	# Mail that waits for an onion would go over the clear net once
	# onionmx's tables are gone: --remove refuses while it is queued.
	rcpt="bob@$DNS_DEAD_ONION"
	t=$(mail_send alice@setup.onionmx.test "$rcpt") || return 1
	wait_status "$t" "$rcpt" deferred 120 >/dev/null || fail "mail to a dead onion was not deferred" || return 1
	setup_run -c "$conf" --remove
	((SETUP_RC == 78)) || fail "--remove with mail for an onion in the queue exited $SETUP_RC, not 78" || return 1
	setup_says "wait for delivery over Tor" || return 1
	setup_same "$conf/main.cf" "$dir/main.cf.setup" "the refused --remove" || return 1
	setup_same "$conf/master.cf" "$dir/master.cf.setup" "the refused --remove" || return 1
	queue_delete ALL
	say "  --remove refused, changing nothing, while mail for $rcpt waited in the queue"

	setup_run -c "$conf" --remove
	((SETUP_RC == 0)) || fail "--remove exited $SETUP_RC" || return 1
	setup_says "^reloaded Postfix" || return 1
	setup_says "^note: kept the static map $conf/onionmx_transport" || return 1
	setup_same "$conf/main.cf" "$dir/before/main.cf" "--remove" || return 1
	setup_same "$conf/master.cf" "$dir/before/master.cf" "--remove" || return 1

	# Setup on the running Postfix: reloaded, and the lookup service
	# answers through it. (No mail right after a reload: Postfix's
	# processes take the new configuration "at their earliest
	# convenience".) Removed again.
	setup_run "${args[@]}"
	((SETUP_RC == 0)) || fail "setup on the running Postfix exited $SETUP_RC" || return 1
	setup_says "^reloaded Postfix \($conf\)\$" || return 1
	setup_says "^ok: the lookup service answers through Postfix: " || return 1
	setup_run -c "$conf" --remove
	((SETUP_RC == 0)) || fail "the second --remove exited $SETUP_RC" || return 1
	pf_stop "$dir"
	setup_same "$conf/main.cf" "$dir/before/main.cf" "--remove" || return 1
	setup_same "$conf/master.cf" "$dir/before/master.cf" "--remove" || return 1
	[[ ! -e $conf/onionmx-setup.state ]] || fail "--remove left the state file" || return 1
	say "  --remove: main.cf and master.cf are byte for byte what they were before setup"

	setup_run -c "$conf" --remove
	((SETUP_RC == 0)) || fail "a third --remove exited $SETUP_RC" || return 1
	setup_says "^onionmx setup postfix: nothing to remove" || return 1
}
