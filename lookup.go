package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/internal/printable"
	"github.com/onionmx/onionmx/lookup"
	"github.com/onionmx/onionmx/table"
)

// "onionmx lookup" prints, for people, what the lookup servers (socketmap,
// tcptable) would tell Postfix for each domain or address, and why.

func lookupCommand() *cli.Command {
	return &cli.Command{
		Name:      "lookup",
		Usage:     "print, as transport-map lines, what Postfix is told for each domain or address, and why",
		ArgsUsage: "DOMAIN|ADDRESS...",
		Description: "The static maps' problems (bad entries, each with its file and line) come first,\n" +
			"as \"# map problem: FILE:LINE: ...\" comment lines on stdout.\n\n" +
			"Exit status: 0 when every argument has an onion route, 1 when some have none,\n" +
			"75 when an answer is unknown (DNS failure, a bad map entry), 78 for a usage or\n" +
			"configuration error.",
		Flags:  routeFlags(),
		Action: runLookup,
	}
}

func runLookup(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) == 0 {
		return badConfig(errors.New("no domain or address given"))
	}
	for _, arg := range args {
		// A flag after the domains would otherwise be looked up as one
		// and its meaning lost (a --dns-via-tor there, the query in the
		// clear). No domain starts with "-"; an address may ("-- -bob@x").
		if strings.HasPrefix(arg, "-") && !strings.Contains(arg, "@") {
			return badConfig(fmt.Errorf("%q: flags go before the domains", arg))
		}
		if _, err := table.ParseKey(arg); err != nil {
			return badConfig(fmt.Errorf("%q: %v", arg, err))
		}
	}
	a, err := newAnswerer(c)
	if err != nil {
		return err
	}
	for _, p := range mapProblems(a) {
		fmt.Fprintf(c.App.Writer, "# map problem: %s\n", printable.Line(p.Error(), maxOutput))
	}
	var none, unknown bool
	for _, arg := range args {
		ans := a.Lookup(c.Context, arg)
		ans.Explain(c.App.Writer)
		switch {
		case ans.Class == table.Temp:
			unknown = true
		case !ans.Routed():
			none = true
		}
	}
	switch {
	case unknown:
		return cli.Exit("", deliver.ExTempFail)
	case none:
		return cli.Exit("", 1)
	}
	return nil
}

// mapProblems returns the problems of the answerer's static maps, in the
// order of --map.
func mapProblems(a *table.Answerer) []*lookup.MapError {
	var ps []*lookup.MapError
	for _, m := range a.Resolver.Maps {
		ps = append(ps, m.Problems()...)
	}
	return ps
}
