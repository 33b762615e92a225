package pgpubsub_test

import (
	"testing"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/pubsub/pgpubsub"
	"github.com/switchboard-go/switchboard/pubsub/pubsubtest"
)

func TestConformance(t *testing.T) {
	db := newPool(t, postgresURL(t))
	shared := migrate(t, db, pgpubsub.Schema{})
	pubsubtest.RunWith(t, pubsubtest.Options{
		// Every broker of the suite is a node on one shared namespace, as
		// in production; each subtest uses topics of its own.
		NewBackend: func(t *testing.T) pubsub.Backend {
			return open(t, db, pgpubsub.Config{Namespace: shared})
		},
		NewSmallHistory: func(t *testing.T, n int) pubsub.Backend {
			ns := migrate(t, db, pgpubsub.Schema{MaxMessages: int64(n)})
			return open(t, db, pgpubsub.Config{Namespace: ns})
		},
		FeedBlocks: true,
	})
}
