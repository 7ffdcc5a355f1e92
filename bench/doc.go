// Package bench measures what one onion delivery costs (issue 6): round
// trips through a proxy that delays like a Tor circuit, peak memory and
// throughput of the real binary against a raw copy through the same proxy,
// and the cost of starting the process that Postfix runs once per message.
//
// Everything is in the package's tests: Go benchmarks that report their
// figures as custom metrics, and a short smoke test that runs with
// `go test ./...` and checks behaviour (round trips counted, no DNS), never
// timing. bench/run.sh runs the benchmarks, prints a table and writes
// BENCHMARKS.md at the repository root:
//
//	bench/run.sh            # everything, 1 GiB included; writes BENCHMARKS.md
//	bench/run.sh --smoke    # everything tiny, in seconds; for CI
//
// or by hand:
//
//	go test ./bench -run '^$' -bench RoundTrips -benchtime 10x -args -delays 50ms
//	go test ./bench -run '^$' -bench Throughput -benchtime 1x -args -sizes 1MiB,100MiB
//	go test ./bench -run '^$' -bench ThroughputRatio -benchtime 5x -args -sizes 1GiB
//	go test ./bench -run '^$' -bench Process -benchtime 200x
package bench
