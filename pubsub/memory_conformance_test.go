package pubsub_test

import (
	"testing"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/pubsub/pubsubtest"
)

func TestBrokerConformance(t *testing.T) {
	pubsubtest.RunWith(t, pubsubtest.Options{
		NewBackend: func(*testing.T) pubsub.Backend {
			return pubsub.NewBroker(pubsub.History(1000, 0))
		},
		NewSmallHistory: func(_ *testing.T, n int) pubsub.Backend {
			return pubsub.NewBroker(pubsub.History(n, 0))
		},
	})
}
