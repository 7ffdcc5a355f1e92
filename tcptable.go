package main

import (
	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/table"
)

// "onionmx tcptable" answers Postfix's tcp_table(5) lookups for
// transport_maps (package table); server.go runs it.
func tcptableCommand() *cli.Command {
	return serverCommand(table.TCPTable, "answer Postfix tcp_table(5) lookups for transport_maps, on stdin/stdout (spawn(8)) or --listen")
}
