package deliver

import (
	"context"
	"fmt"
	"net"

	"github.com/onionmx/onionmx/tor"
)

// Dialer opens a connection to an onion service. tor.SOCKSDialer is the
// real one; tests pass others.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// dialError turns a failure to connect to target through Tor, as package
// tor classifies it, into a delivery's outcome. The *Error wraps the
// *tor.ConnectError, so that the command can add its hint (a wrong
// --socks) to a NotSOCKS one.
func dialError(socks fmt.Stringer, target string, err error, ctxErr error) *Error {
	ce := tor.Classify(socks.String(), target, err, ctxErr)
	switch ce.Kind {
	case tor.NeedsAuth:
		return fail("5.7.0", ce, "%s", ce)
	case tor.BadAddress:
		return fail("5.1.2", ce, "%s", ce)
	case tor.NotSOCKS:
		// Something else listens there: a configuration error.
		return ConfigError(ce)
	}
	// Tor's other replies, timeouts and a SocksPort that is down come
	// and go.
	return fail("4.4.1", ce, "%s", ce)
}
