package main

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/lookup"
)

// The flags and constructors that several commands share: the static maps,
// the EHLO name and the route resolver. The DNS flags are in dns.go.

// Flags shared by the commands that resolve routes.
var (
	mapFlag = &cli.StringSliceFlag{Name: "map", Usage: "static map `FILE` (Postfix transport text, or the community YAML if it ends in .yml/.yaml); may be repeated, first match wins"}
	dnsFlag = &cli.StringFlag{Name: "dns", Usage: "DNS server `HOST:PORT` for SRV lookups (default: the system's resolvers)"}
	// transportFlag names onionmx's own master.cf service: the lookup
	// servers answer with it, and static-map entries for it are onionmx's
	// to judge.
	transportFlag = &cli.StringFlag{Name: "transport", Value: "onionmx", Usage: "the master.cf transport `NAME` of onionmx deliver"}
)

// heloName returns --helo, or this host's fully qualified name as Postfix
// forms its myhostname. guessed is set when the name was formed from a
// host name without a domain ("vm.localdomain").
func heloName(c *cli.Context) (name string, guessed bool) {
	if h := c.String("helo"); h != "" {
		return h, false
	}
	name, qualified := deliver.Hostname()
	return name, !qualified
}

// newResolver builds the route resolver from --map and the DNS flags
// (newDNSClient). A map that cannot be read or parsed as a whole is a
// configuration error; its bad entries are not (Map.Problems), they are
// errors for the domains they cover. --transport, for the commands that
// have it, says which map entries are onionmx's.
func newResolver(c *cli.Context) (*lookup.Resolver, error) {
	r := &lookup.Resolver{}
	transport := lookup.DefaultTransport
	if t := c.String("transport"); t != "" {
		transport = t
	}
	for _, path := range c.StringSlice("map") {
		m, err := lookup.LoadMapFor(path, transport)
		if err != nil {
			return nil, deliver.ConfigError(err)
		}
		r.Maps = append(r.Maps, m)
	}
	dns, err := newDNSClient(c)
	if err != nil {
		return nil, err
	}
	r.DNS = dns
	return r, nil
}

// durationFlag is a flag for a duration, like cli.DurationFlag, whose
// errors say what is wrong: "5" lacks a unit.
func durationFlag(name string, value time.Duration, usage string) *cli.GenericFlag {
	d := durationValue(value)
	return &cli.GenericFlag{Name: name, Value: &d, Usage: usage}
}

// duration returns the value of a durationFlag.
func duration(c *cli.Context, name string) time.Duration {
	if d, ok := c.Generic(name).(*durationValue); ok {
		return time.Duration(*d)
	}
	return 0
}

type durationValue time.Duration

func (d *durationValue) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return fmt.Errorf("a duration needs a unit, such as %ss or %sm", s, s)
		}
		return errors.New("want a duration such as 30s, 5m or 1h30m")
	}
	*d = durationValue(v)
	return nil
}

func (d *durationValue) String() string { return time.Duration(*d).String() }
