package main

import (
	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/table"
)

// "onionmx socketmap" answers Postfix's socketmap_table(5) lookups for
// transport_maps (package table); server.go runs it.
func socketmapCommand() *cli.Command {
	return serverCommand(table.Socketmap, "answer Postfix socketmap_table(5) lookups for transport_maps, on stdin/stdout (spawn(8)) or --listen")
}
