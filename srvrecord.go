package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/dns"
	"github.com/onionmx/onionmx/internal/printable"
	"github.com/onionmx/onionmx/lookup"
	"github.com/onionmx/onionmx/table"
)

// The command for the receiving side: "onionmx srv-record" prints the SRV
// record that publishes an onion MX, and with --verify what DNS has
// (lookup.VerifySRV).

// The fixed fields of the printed record. Priority 0 and weight 5 are what
// the onionmx community publishes; a domain with several onions edits them.
const (
	srvPriority = 0
	srvWeight   = 5
)

// maxDNSName is the longest domain name in text, 253 octets (RFC 1035
// section 2.3.4, less the final dot).
const maxDNSName = 253

// maxTTL is the largest TTL, 2^31-1 seconds (RFC 2181 section 8).
const maxTTL = 1<<31 - 1

func srvRecordCommand() *cli.Command {
	return &cli.Command{
		Name:      "srv-record",
		UsageText: "onionmx srv-record --domain DOMAIN --onion ADDRESS [OPTIONS]",
		Usage:     "print the _onion-mx._tcp SRV record that publishes an onion MX for a domain, in zone-file form; --verify checks that DNS has it",
		Description: "The record goes to stdout; with --verify the outcome follows as zone-file comments (\"; ...\").\n" +
			"Exit status: 0 printed, and with --verify DNS publishes that onion and port; 1 DNS does not\n" +
			"(it says what DNS has instead); 75 DNS could not be asked; 78 a usage error.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "domain", Usage: "the mail `DOMAIN` that receives over Tor (required)"},
			&cli.StringFlag{Name: "onion", Usage: "the v3 onion `ADDRESS` of its SMTP service (required)"},
			&cli.IntFlag{Name: "port", Value: lookup.DefaultPort, Usage: "the onion service's SMTP `PORT`"},
			&cli.IntFlag{Name: "ttl", Value: 3600, Usage: "the record's TTL in `SECONDS`"},
			&cli.BoolFlag{Name: "verify", Usage: "look the record up and report whether DNS publishes that onion and port"},
			dnsFlag,
			dnssecFlag,
			dnsViaTorFlag,
			socksFlag,
		},
		Action: runSRVRecord,
	}
}

func runSRVRecord(c *cli.Context) error {
	if c.Args().Present() {
		return badConfig(fmt.Errorf("unexpected argument %q", c.Args().First()))
	}
	if c.String("domain") == "" {
		return badConfig(errors.New("--domain is required"))
	}
	if c.String("onion") == "" {
		return badConfig(errors.New("--onion is required"))
	}
	domain, err := lookup.NormalizeDomain(c.String("domain"))
	if err != nil {
		return badConfig(fmt.Errorf("--domain: %v", err))
	}
	if lookup.IsOnion(domain) {
		return badConfig(fmt.Errorf("--domain %s: an onion domain needs no record, mail to it goes to the onion", domain))
	}
	onion := strings.TrimSuffix(strings.ToLower(c.String("onion")), ".")
	if err := lookup.CheckOnion(onion); err != nil {
		return badConfig(flagError("onion", c.String("onion"), err))
	}
	port, ttl := c.Int("port"), c.Int("ttl")
	if port < 1 || port > 65535 {
		return badConfig(fmt.Errorf("--port %d: want 1 to 65535", port))
	}
	if ttl < 0 || ttl > maxTTL {
		return badConfig(fmt.Errorf("--ttl %d: want 0 to %d", ttl, maxTTL))
	}
	// The DNS flags are checked even without --verify, before anything is
	// printed, like every usage error.
	client, err := newDNSClient(c)
	if err != nil {
		return err
	}

	name := lookup.SRVName(domain)
	w := c.App.Writer
	fmt.Fprintf(w, "%s %d IN SRV %d %d %d %s.\n", name, ttl, srvPriority, srvWeight, port, onion)
	if !c.Bool("verify") {
		return nil
	}
	return verifySRV(c, client, domain, onion, port)
}

// verifySRV asks DNS for the record srv-record printed and writes what it
// has, as zone-file comments; the exit status says whether it publishes
// the record.
func verifySRV(c *cli.Context, client *dns.Client, domain, onion string, port int) error {
	ctx, cancel := context.WithTimeout(c.Context, table.DefaultTimeout)
	defer cancel()
	v := lookup.VerifySRV(ctx, client, domain, onion, port)
	w, name := c.App.Writer, v.Name
	authenticated := ""
	if client.DNSSEC == dns.DNSSECRequire {
		authenticated = ", DNSSEC-authenticated"
	}
	switch v.Publication {
	case lookup.Published:
		fmt.Fprintf(w, "; verified: DNS publishes %s port %d for %s%s\n", onion, port, domain, authenticated)
		if len(v.Records) > 1 {
			fmt.Fprintf(w, "; DNS has %d records:\n", len(v.Records))
			writeSRVs(w, name, v.Records)
		}
		return nil
	case lookup.PublishedOther:
		fmt.Fprintf(w, "; not published: DNS does not have %s port %d for %s; it has instead%s:\n", onion, port, domain, authenticated)
		writeSRVs(w, name, v.Records)
	case lookup.NotAuthenticated:
		fmt.Fprintf(w, "; not verified: %s\n", printable.Line(dnsErrText(v.Err), maxOutput))
	case lookup.NotPublished:
		if v.Err != nil {
			fmt.Fprintf(w, "; not published: DNS has no record %s (%s)\n", name, printable.Line(dnsErrText(v.Err), maxOutput))
		} else {
			fmt.Fprintf(w, "; not published: DNS has no SRV record at %s\n", name)
		}
	default:
		fmt.Fprintf(w, "; cannot verify: %s\n", printable.Line(dnsErrText(v.Err), maxOutput))
		return cli.Exit("", deliver.ExTempFail)
	}
	return cli.Exit("", 1)
}

// writeSRVs writes what DNS has, as commented-out zone-file lines.
func writeSRVs(w io.Writer, name string, srvs []*net.SRV) {
	for _, s := range srvs {
		fmt.Fprintf(w, ";\t%s IN SRV %d %d %d %s\n", name, s.Priority, s.Weight, s.Port, printable.Line(s.Target, maxDNSName))
	}
}

// dnsErrText is the cause of a lookup failure without Go's
// "lookup NAME on SERVER:" prefix.
func dnsErrText(err error) string {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr.Err
	}
	return err.Error()
}
