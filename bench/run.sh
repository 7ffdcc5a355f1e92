#!/usr/bin/env bash
# What one onion delivery costs (issue 6): round trips, memory and
# throughput, process cost. Builds onionmx and the benchmarks, runs them,
# prints a table and writes BENCHMARKS.md at the repository root.
#
#   bench/run.sh              the full run of sections 1-3 (a few minutes,
#                             1 GiB included); section 4 is carried over
#                             from the existing file
#   bench/run.sh --smoke      everything tiny, in seconds: prints the table,
#                             writes no file unless --out is given; for CI.
#                             Fails only if a benchmark fails, never on timing.
#   bench/run.sh --e2e        section 4 only: onionmx against Postfix's
#                             smtp(8) under torsocks, 200 messages each way,
#                             twice, in the end-to-end environment
#                             (bench/torsocks.sh brings up e2e/run.sh --up
#                             and tears it down; as root; ~15 minutes);
#                             replaces section 4 of the file, leaves the rest
#   bench/run.sh --e2e-smoke  the same with 5 messages, methods (a) (b) (c)
#                             only (~2 minutes with the bring-up): prints the
#                             section, writes no file unless --out is given.
#                             Fails when a method delivers nothing, loses or
#                             duplicates mail, or bypasses Tor; never on timing.
#   bench/run.sh --out FILE   write the report to FILE instead
#   bench/run.sh --keep DIR   keep the raw benchmark output in DIR
#
# Sections 1-3 run on loopback: a fake Tor SocksPort (internal/sockstest),
# SMTP sinks and a DNS server that must never be asked, all in-process in
# the benchmark binary; onionmx runs as the real binary. Section 4 runs on
# loopback too: a private Tor network, two Postfix instances (e2e/).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

mode=full out= keep=
while [ $# -gt 0 ]; do
	case $1 in
	--smoke) mode=smoke ;;
	--out) out=${2:?--out needs a file}; shift ;;
	--keep) keep=${2:?--keep needs a directory}; shift ;;
	--e2e) mode=e2e ;;
	--e2e-smoke) mode=e2e-smoke ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
	shift
done
if { [ "$mode" = full ] || [ "$mode" = e2e ]; } && [ -z "$out" ]; then
	out=BENCHMARKS.md
fi

# section4 FILE: section 4 of an existing report ("## 4. " up to the next
# "## " heading), if it has figures; nothing otherwise.
section4() {
	[ -n "$1" ] && [ -f "$1" ] || return 0
	local sec
	sec=$(awk '/^## 4\. / { p = 1 } p && /^## / && !/^## 4\. / { p = 0 } p' "$1")
	case $sec in "" | *"Not measured yet"*) return 0 ;; esac
	printf '%s\n' "$sec"
}

# Section 4 (issue 6 part 4): bench/torsocks.sh in the e2e environment. The
# section replaces section 4 of the report file; the rest stays as it is.
if [ "$mode" = e2e ] || [ "$mode" = e2e-smoke ]; then
	if [ "$mode" = e2e ] && [ ! -f "$out" ]; then
		echo "bench/run.sh: $out does not exist: run bench/run.sh first (sections 1-3), then --e2e" >&2
		exit 1
	fi
	tmp4=$(mktemp -d /tmp/onionmx-bench4.XXXXXX)
	trap 'rm -rf "$tmp4"' EXIT
	args=()
	[ "$mode" = e2e-smoke ] && args+=(--smoke)
	[ -n "$keep" ] && args+=(--keep "$keep")
	bash bench/torsocks.sh "${args[@]}" >"$tmp4/section.md"
	echo >&2
	cat "$tmp4/section.md"
	if [ -n "$out" ] && [ "$mode" = e2e-smoke ]; then
		cp "$tmp4/section.md" "$out"
		echo "bench/run.sh: wrote $out" >&2
	elif [ -n "$out" ]; then
		awk -v sec="$tmp4/section.md" '
			function put(   l) { while ((getline l < sec) > 0) print l; close(sec); done = 1 }
			/^## 4\. / { put(); skip = 1; next }
			skip && /^## / { skip = 0; print "" }
			!skip { print }
			END { if (!done) { print ""; put() } }
		' "$out" >"$tmp4/report.md"
		cp "$tmp4/report.md" "$out"
		echo "bench/run.sh: wrote section 4 of $out" >&2
	fi
	exit 0
fi

if [ "$mode" = smoke ]; then
	delays=2ms rt_runs=2 proc_runs=5 dot_runs=1
	sizes="64KiB:1 1MiB:1" ratio_size=1MiB ratio_runs=1
else
	delays=25ms,50ms rt_runs=20 proc_runs=200 dot_runs=20
	sizes="1MiB:20 100MiB:5 1GiB:1" ratio_size=1GiB ratio_runs=5
fi

tmp=$(mktemp -d /tmp/onionmx-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/out"

echo "== building onionmx and the benchmarks" >&2
CGO_ENABLED=0 go build -trimpath -tags urfave_cli_no_docs -o "$tmp/onionmx" .
go test -c -o "$tmp/bench.test" ./bench

# bench RUNS REGEXP [FLAGS...]: run benchmarks; their output goes to
# $tmp/bench.txt and, as it comes, to stderr. A failing benchmark stops the
# script (set -e, pipefail).
bench() {
	local runs=$1 re=$2
	shift 2
	(cd bench && "$tmp/bench.test" -test.run '^$' -test.bench "$re" -test.benchtime "${runs}x" \
		-bin "$tmp/onionmx" -out "$tmp/out" "$@") | tee -a "$tmp/bench.txt" >&2
}

echo "== round trips (D = $delays)" >&2
bench "$rt_runs" '^BenchmarkRoundTrips$' -delays "$delays"
for s in $sizes; do
	echo "== memory and throughput, ${s%%:*}" >&2
	bench "${s##*:}" "^BenchmarkThroughput\$/^size=${s%%:*}\$" -sizes "${s%%:*}"
done
echo "== process cost" >&2
bench "$proc_runs" '^BenchmarkProcess$'
bench "$proc_runs" '^BenchmarkProcessCPU$'
echo "== the body, 1 GiB against a raw copy, and in memory" >&2
bench "$ratio_runs" '^BenchmarkThroughputRatio$' -sizes "$ratio_size"
go test -c -o "$tmp/deliver.test" ./deliver
(cd deliver && "$tmp/deliver.test" -test.run '^$' -test.bench '^BenchmarkBody$' -test.benchtime "${dot_runs}x") |
	tee -a "$tmp/bench.txt" >&2
if [ -n "$keep" ]; then
	mkdir -p "$keep" && cp -r "$tmp/bench.txt" "$tmp/out" "$keep/"
fi

# The benchmark lines as "name unit value", one metric a line, the
# GOMAXPROCS suffix dropped.
awk '/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	for (i = 3; i < NF; i += 2) print name, $(i + 1), $i
}' "$tmp/bench.txt" >"$tmp/metrics"

# get NAME UNIT: the value, or "?" when the benchmark did not report it.
get() { awk -v n="$1" -v u="$2" '$1 == n && $2 == u { v = $3 } END { print (v == "" ? "?" : v) }' "$tmp/metrics"; }
# calc EXPR: floating-point arithmetic with awk; "?" if an operand is.
calc() { case $* in *\?*) echo "?" ;; *) awk "BEGIN { printf \"%.${2:-1}f\", $1 }" ;; esac; }

report() {
	local cpu go_cpu now
	cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
	go_cpu=$(sed -n 's/^cpu: //p' "$tmp/bench.txt" | head -1 | sed 's/[[:space:]]*$//')
	now=$(date -u '+%Y-%m-%d %H:%M UTC')
	local rev
	rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	if [ -n "$(git status --porcelain 2>/dev/null | grep -v '^??' || true)" ]; then
		rev="$rev (with uncommitted changes)"
	fi

	cat <<-EOF
	# Benchmarks: what one onion delivery costs

	Written by \`bench/run.sh$([ "$mode" = smoke ] && echo " --smoke")\` on $now, commit $rev.
	Machine: $(nproc) CPUs, ${cpu:-unknown CPU}${go_cpu:+ (Go reports: $go_cpu)},
	$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory, Linux $(uname -r); $(go version | cut -d' ' -f3-).
	$([ "$mode" = smoke ] && echo "
	**A smoke run: tiny sizes and few runs. These figures say nothing; run \`bench/run.sh\`.**
	")
	Reproduce: \`bench/run.sh\` (a few minutes; \`bench/run.sh --smoke\` checks in seconds that
	everything still runs). The benchmarks are in \`bench/\`; everything runs on loopback:
	the fake Tor SocksPort of \`internal/sockstest\`, SMTP sinks and a DNS server that must
	never be asked, in the benchmark process; onionmx runs as the real binary (\`go build\`)
	except in the round-trip benchmark, which calls \`deliver.Client\` in-process to trace it.

	## 1. Round trips per delivery

	A 2 KiB message to one recipient, through a SOCKS5 proxy that models a Tor circuit with a
	one-way delay D: the SOCKS handshake is answered at once (it is the local Tor), the CONNECT
	reply comes 2·D later (the rendezvous: BEGIN to the service and CONNECTED back), the SMTP
	server is dialled half-way so that its greeting travels back right behind the CONNECT reply
	(as an onion service connects to its target when the BEGIN arrives), and every chunk is held
	D in each direction. The server is go-smtp's, which offers PIPELINING and CHUNKING.
	RT is the wall time of a delivery divided by 2·D; "waits" are counted on the wire: the times
	the client sent something and then waited for a reply (the CONNECT is one round trip more).
	The server offers PIPELINING and CHUNKING; onionmx (\`deliver.Client\`) is run three ways:
	with one recipient (RFC 2920 PIPELINING and RFC 3030 CHUNKING: MAIL, RCPT and BDAT LAST with
	the body in one batch), with \`--no-chunking\` (PIPELINING: MAIL, RCPT and DATA in one batch,
	then the body), and with two recipients (all or nothing rules BDAT out: PIPELINING).
	$rt_runs deliveries each.

	| D | client | ms per delivery | RT (time / 2·D) | waits after sending | the exchange needs (RT) |
	|---:|---|---:|---:|---:|---:|
	EOF
	local d c min
	for d in ${delays//,/ }; do
		for c in onionmx:3 no-chunking:4 2-recipients:4; do
			min=${c##*:} c=${c%%:*}
			local n="BenchmarkRoundTrips/D=$d/client=$c"
			echo "| $d | $c | $(calc "$(get "$n" ns/op) / 1e6") | $(calc "$(get "$n" RT/op)" 2) | $(calc "$(get "$n" turns/op)" 1) | $min |"
		done
	done
	local d50=${delays##*,}
	cat <<-EOF

	### Where the time goes, step by step (D = $d50, the last delivery)

	"Waited" is from the last byte the client sent to the first byte of the reply; "step took"
	is from the end of the previous step to the last byte of this step's replies.

	EOF
	for c in onionmx no-chunking 2-recipients; do
		cat "$tmp/out/steps-D=$d50-$c.md" 2>/dev/null || echo "(no step table for $c)"
		echo
	done
	cat "$tmp/out/socks-D=$d50.md" 2>/dev/null || true
	cat <<-'EOF'

	Accounting of onionmx's delivery, against the minimal exchange:

	- **Route**: a literal nexthop (`[x.onion]:25`) makes no lookup at all: the DNS server the
	  client is given saw no query (checked in every benchmark run, in-process and with the
	  binary's `--dns`).
	- **Connect**: one SOCKS connection and one CONNECT per delivery (checked). The handshake
	  of golang.org/x/net/proxy is three exchanges (greeting/method, RFC 1929 user/pass,
	  CONNECT), all with the local Tor: microseconds. Only the CONNECT reply carries the
	  rendezvous: 1 RT.
	- **Greeting**: ~0 RT; it arrives with the CONNECT reply.
	- **EHLO**: 1 RT: its reply says whether PIPELINING and CHUNKING are offered, so it ends
	  a batch (RFC 2920).
	- **The transaction**: with CHUNKING and one recipient, MAIL, RCPT and BDAT LAST with the
	  body go in one write and their replies are read together: 1 RT. With PIPELINING alone,
	  MAIL, RCPT (every one) and DATA in one write, 1 RT to the 354 (DATA must end a batch), and
	  1 RT from the body to the reply to the final dot.
	- **QUIT**: sent, its reply not awaited: 0 RT.

	Total: 3 RT with CHUNKING (CONNECT, EHLO, the transaction), 4 with PIPELINING alone or with
	several recipients: what the exchange needs. The greeting wait cannot go (RFC 5321: the
	client waits for it), and it costs nothing here: it arrives with the CONNECT reply.

	All or nothing with several recipients survives PIPELINING: a rejected RCPT is known before
	the body is sent, and if DATA got its 354 anyway, closing the connection without the final
	dot makes the server discard the message. It does not survive MAIL+RCPT+BDAT LAST in one
	batch (the body is gone before the RCPT replies come, and the server delivers to the
	accepted recipients), so that last step is only for deliveries with one recipient, which is
	what the example configuration sets (`onionmx_destination_recipient_limit = 1`).

	## 2. Memory and throughput

	The real binary delivers a message of each size (base64 lines, LF line ends, as pipe(8)
	gives it, fed through a pipe) through the fake SocksPort with no delay (it relays with
	io.Copy, which splices) to a lean SMTP sink that counts the bytes it receives and discards
	them; the raw baseline is a process that sends the same bytes as they are through the same
	proxy (the same x/net/proxy dial) to a server that discards them and acknowledges the last
	byte. MiB/s is message bytes over start-to-exit time; peak RSS is VmHWM sampled from /proc
	every 2 ms; CPU is the process's user + system time. The last column delivers to go-smtp's
	server instead, whose byte-by-byte reader costs more CPU than the sender.
	All processes and the in-process servers share the machine's CPUs.

	| size | onionmx MiB/s | raw MiB/s | onionmx / raw | onionmx peak RSS (MiB) | raw peak RSS (MiB) | onionmx CPU (ms) | raw CPU (ms) | onionmx to go-smtp MiB/s |
	|---:|---:|---:|---:|---:|---:|---:|---:|---:|
	EOF
	local s n r g
	for s in $sizes; do
		s=${s%%:*}
		n="BenchmarkThroughput/size=$s/path=onionmx" r="BenchmarkThroughput/size=$s/path=raw"
		g="BenchmarkThroughput/size=$s/path=onionmx-to-gosmtp"
		echo "| $s | $(calc "$(get "$n" MiB/s)") | $(calc "$(get "$r" MiB/s)") | $(calc "$(get "$n" MiB/s) / $(get "$r" MiB/s)" 2) | $(calc "$(get "$n" peak-RSS-MiB)") | $(calc "$(get "$r" peak-RSS-MiB)") | $(calc "$(get "$n" cpu-ms/op)" 0) | $(calc "$(get "$r" cpu-ms/op)" 0) | $(calc "$(get "$g" MiB/s)") |"
	done
	local tr="BenchmarkThroughputRatio/size=$ratio_size" bb="BenchmarkBody/impl"
	cat <<-EOF

	The body is read from the pipe 256 KiB at a time (onionmx deliver asks the kernel for a 1 MiB
	pipe and reads it non-blocking, a deadline ending a read that never returns), and written by
	\`deliver/body.go\`: one normaliser for DATA and BDAT that finds line ends with
	bytes.IndexByte, copies whole lines, adds the CR, the stuffed dot (DATA only) and the folding,
	and writes 256 KiB at a time (BDAT: 1 MiB chunks).

	Side by side, $ratio_runs times in turn, $ratio_size through the same proxy (\`BenchmarkThroughputRatio\`):

	| | MiB/s | CPU (ms) | peak RSS (MiB) |
	|---|---:|---:|---:|
	| onionmx deliver | $(calc "$(get "$tr" onionmx-MiB/s)") | $(calc "$(get "$tr" onionmx-cpu-ms/op)" 0) | $(calc "$(get "$tr" onionmx-peak-RSS-MiB)") |
	| raw copy | $(calc "$(get "$tr" raw-MiB/s)") | $(calc "$(get "$tr" raw-cpu-ms/op)" 0) | $(calc "$(get "$tr" raw-peak-RSS-MiB)") |
	| onionmx / raw | $(calc "$(get "$tr" ratio)" 2) | | |

	The raw copy never looks at the bytes (io.Copy from the pipe to the socket). onionmx has to
	read every byte into its memory, find the line ends and write what it made of them: the
	difference in CPU above. On 2 CPUs shared with the sink, the feeder and the proxy, that CPU
	is wall time.

	In memory (\`deliver\`'s \`BenchmarkBody\`, 16 MiB of 76-octet lines, to io.Discard):

	| writer | MiB/s |
	|---|---:|
	| io.CopyBuffer, nothing done to the bytes | $(calc "$(get "$bb=copy" MiB/s)") |
	| net/textproto's DotWriter (what go-smtp's client uses) | $(calc "$(get "$bb=textproto" MiB/s)") |
	| writeBody (DATA: CRLF, dot-stuffing, folding) | $(calc "$(get "$bb=writeBody" MiB/s)") |
	| writeChunks (BDAT: CRLF, folding) | $(calc "$(get "$bb=writeChunks" MiB/s)") |

	## 3. Process cost

	Postfix starts \`onionmx deliver\` once per message. Start-to-exit of $proc_runs runs each, on the
	zero-latency path (no delay, a 2 KiB message, fed through a pipe), against what starting a
	process costs at all:

	| what | median (ms) | p90 (ms) | mean (ms) | page faults |
	|---|---:|---:|---:|---:|
	EOF
	local p label
	for p in "true:/bin/true (fork and exec)" "go-hello:an empty Go program (the Go runtime)" \
		"help:onionmx --help (runtime, package init, command line)" \
		"deliver:onionmx deliver (a whole delivery)" \
		"Client.Deliver:deliver.Client.Deliver in-process (no process)"; do
		label=${p#*:} p=${p%%:*}
		n="BenchmarkProcess/cmd=$p"
		echo "| $label | $(calc "$(get "$n" p50-ms)" 2) | $(calc "$(get "$n" p90-ms)" 2) | $(calc "$(get "$n" ns/op) / 1e6" 2) | $(calc "$(get "$n" faults/op)" 0) |"
	done
	local h="BenchmarkProcess/cmd=help" dl="BenchmarkProcess/cmd=deliver"
	cat <<-EOF

	The delivery itself is $(calc "$(get "BenchmarkProcess/cmd=Client.Deliver" p50-ms)" 2) ms in-process;
	\`onionmx deliver\` takes $(calc "$(get "$dl" p50-ms) - $(get "$h" p50-ms)" 2) ms more than \`onionmx --help\`
	(median). The rest is starting the process, and it follows the page faults of loading the
	binary (the Go runtime, then onionmx's dependencies and their package initialisation): on a
	Tor path it is small beside one round trip. (Page faults are the process's own minor and
	major faults, from its rusage; the in-process row has none of its own.)

	CPU (user + system, from rusage), the programs run in turn, $proc_runs times each:

	| what | CPU per run (ms) |
	|---|---:|
	EOF
	local c="BenchmarkProcessCPU"
	for p in "true:/bin/true" "go-hello:an empty Go program" "help:onionmx --help" "version:onionmx --version" \
		"deliver:onionmx deliver" "deliver-maxprocs1:onionmx deliver, GOMAXPROCS=1 (postfix-master.cf.example)"; do
		echo "| ${p#*:} | $(calc "$(get "$c" "${p%%:*}-cpu-ms")" 2) |"
	done
	cat <<-EOF

	A delivery costs $(calc "$(get "$c" deliver/go-hello)" 2)x the CPU of an empty Go program
	($(calc "$(get "$c" deliver-maxprocs1/go-hello)" 2)x with GOMAXPROCS=1); issue 10's target is 2.5x.

	## Against the targets of issue 10

	EOF
	local tr="BenchmarkThroughputRatio/size=$ratio_size" c="BenchmarkProcessCPU"
	local ratio rss cpu cpu1
	ratio=$(calc "$(get "$tr" ratio)" 2)
	rss=$(calc "$(get "$tr" onionmx-peak-RSS-MiB)")
	cpu=$(calc "$(get "$c" deliver/go-hello)" 2)
	cpu1=$(calc "$(get "$c" deliver-maxprocs1/go-hello)" 2)
	local rtp="BenchmarkRoundTrips/D=$d50/client"
	cat <<-EOF
	| target | measured | |
	|---|---|---|
	| round trips, 1 recipient, PIPELINING and CHUNKING: at most 3.1 | $(calc "$(get "$rtp=onionmx" RT/op)" 2) RT at D = $d50 | $(verdict "$(calc "$(get "$rtp=onionmx" RT/op)" 2)" 3.1) |
	| round trips, 1 recipient, PIPELINING (\`--no-chunking\`): at most 4.1 | $(calc "$(get "$rtp=no-chunking" RT/op)" 2) RT | $(verdict "$(calc "$(get "$rtp=no-chunking" RT/op)" 2)" 4.1) |
	| round trips, 2 recipients: at most 4.1 | $(calc "$(get "$rtp=2-recipients" RT/op)" 2) RT | $(verdict "$(calc "$(get "$rtp=2-recipients" RT/op)" 2)" 4.1) |
	| CPU of one deliver process: at most 2.5 times an empty Go program's | ${cpu}x; ${cpu1}x with GOMAXPROCS=1, as the example master.cf runs it | $(verdict "$cpu1" 2.5) (with GOMAXPROCS=1) |
	| body: at least 0.9 of a raw copy's throughput at $ratio_size | ${ratio} of raw | $(verdict_min "$ratio" 0.9 "onionmx reads and rewrites every byte in user space, the raw copy does not look at them (section 2)") |
	| peak RSS below 32 MiB at $ratio_size | $rss MiB | $(verdict "$rss" 32) |
	| private Tor network, 200 messages: machine CPU per message at most 1.3 times smtp(8)'s under torsocks without the connection cache | in the end-to-end environment | section 4 |

	Timing on a shared virtual machine is noisy: from run to run the absolute figures move by
	tens of percent (the raw copy most); the round-trip counts, the memory figures and the
	order of magnitude of the ratios do not.

	EOF
	# Section 4 comes from bench/run.sh --e2e; keep what the file has.
	local prev
	prev=$(section4 "$out")
	if [ -n "$prev" ]; then
		printf '%s\n' "$prev"
	else
		cat <<-'EOF'
		## 4. Against Postfix's smtp(8) under torsocks

		Not measured yet: `bench/run.sh --e2e` measures it in the end-to-end environment (private
		Tor network, receiving Postfix; `e2e/run.sh --up`) and writes this section.
		EOF
	fi
}

# verdict VALUE LIMIT: "met" when VALUE <= LIMIT, else "missed".
verdict() {
	case $1 in \?) echo "not measured" ;; *)
		if awk "BEGIN { exit !($1 <= $2) }"; then echo "met"; else echo "**missed** by $(calc "$1 - $2")"; fi ;;
	esac
}
# verdict_min VALUE LIMIT WHY: "met" when VALUE >= LIMIT, else "missed by" and WHY.
verdict_min() {
	case $1 in \?) echo "not measured" ;; *)
		if awk "BEGIN { exit !($1 >= $2) }"; then echo "met"; else
			echo "**missed**: $1 where $2 is the target, $(calc "$2 / $1" 1) times short${3:+; $3}"; fi ;;
	esac
}

report >"$tmp/report.md"
echo >&2
cat "$tmp/report.md"
if [ -n "$out" ]; then
	cp "$tmp/report.md" "$out"
	echo "bench/run.sh: wrote $out" >&2
fi
