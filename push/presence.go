package push

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"sync"
	"time"

	"github.com/switchboard-go/switchboard/pubsub"
)

// presenceNote is what hubs tell each other on the presence topic.
type presenceNote struct {
	Node  string         `json:"node"`
	Op    string         `json:"op"` // "user", "snapshot", "hello", "bye"
	User  string         `json:"user,omitempty"`
	Conns int            `json:"conns,omitempty"`
	Users map[string]int `json:"users,omitempty"`
}

// presence tracks who is connected on every hub of the broker: this hub's
// own users directly, the others' from their notes.
type presence struct {
	h    *Hub
	cbMu sync.Mutex // serializes the OnPresence callbacks

	mu    sync.Mutex
	own   map[string]int         // guarded by mu
	nodes map[string]*remoteNode // guarded by mu
	total map[string]int         // guarded by mu
}

type remoteNode struct {
	users map[string]int
	seen  time.Time
}

func startPresence(h *Hub) (*presence, error) {
	p := &presence{
		h: h, own: make(map[string]int), nodes: make(map[string]*remoteNode),
		total: make(map[string]int),
	}
	sub, err := h.b.Subscribe(h.ctx, h.presenceTopic(), pubsub.Buffer(fanoutBuffer))
	if err != nil {
		return nil, err
	}
	h.wg.Add(1)
	go p.run(sub)
	p.publish(presenceNote{Op: "hello"})
	return p, nil
}

func (p *presence) publish(n presenceNote) {
	n.Node = p.h.node
	data, _ := json.Marshal(n)
	_, _ = p.h.b.Publish(p.h.ctx, pubsub.Message{Topic: p.h.presenceTopic(), Data: data})
}

// local records that user now holds n connections on this hub.
func (p *presence) local(user string, n int) {
	p.mu.Lock()
	if n == 0 {
		delete(p.own, user)
	} else {
		p.own[user] = n
	}
	p.recompute()
	p.publish(presenceNote{Op: "user", User: user, Conns: n})
}

func (p *presence) bye() { p.publish(presenceNote{Op: "bye"}) }

func (p *presence) totals() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.total)
}

// recompute derives the totals and tells the callback who came and went.
// The caller holds p.mu; recompute releases it.
func (p *presence) recompute() {
	next := maps.Clone(p.own)
	for _, n := range p.nodes {
		for u, c := range n.users {
			next[u] += c
		}
	}
	var events []PresenceEvent
	if p.h.cfg.onPresence != nil {
		for u := range next {
			if p.total[u] == 0 {
				events = append(events, PresenceEvent{User: u, Online: true})
			}
		}
		for u := range p.total {
			if next[u] == 0 {
				events = append(events, PresenceEvent{User: u, Online: false})
			}
		}
	}
	p.total = next
	if len(events) == 0 {
		p.mu.Unlock()
		return
	}
	p.cbMu.Lock()
	p.mu.Unlock()
	defer p.cbMu.Unlock()
	for _, e := range events {
		p.h.cfg.onPresence(e)
	}
}

func (p *presence) run(sub pubsub.Subscription) {
	h := p.h
	defer h.wg.Done()
	defer func() { sub.Close() }()
	every := h.cfg.presenceInterval
	due := h.clock.Now().Add(every)
	buf := make([]pubsub.Message, 0, 64)
	for {
		wait, cancel := context.WithCancel(h.ctx)
		t := h.clock.AfterFunc(due.Sub(h.clock.Now()), cancel)
		batch, err := sub.NextBatch(wait, buf[:0])
		t.Stop()
		cancel()
		switch {
		case h.ctx.Err() != nil:
			return
		case err == nil:
			for i := range batch {
				p.apply(batch[i].Data)
			}
			clear(batch)
		case wait.Err() != nil:
			// The interval is over: say who is here, forget the silent.
			now := h.clock.Now()
			due = now.Add(every)
			p.mu.Lock()
			snap := maps.Clone(p.own)
			for id, n := range p.nodes {
				if now.Sub(n.seen) > 3*every {
					delete(p.nodes, id)
				}
			}
			p.recompute()
			p.publish(presenceNote{Op: "snapshot", Users: snap})
		case errors.Is(err, pubsub.ErrSlowConsumer):
			// Missed notes are repaired by the next snapshots.
			sub.Close()
			next, serr := h.b.Subscribe(h.ctx, h.presenceTopic(), pubsub.Buffer(fanoutBuffer))
			if serr != nil {
				<-h.ctx.Done()
				return
			}
			sub = next
		case errors.Is(err, pubsub.ErrGap):
		default:
			// The broker is closed: presence ends with the hub.
			<-h.ctx.Done()
			return
		}
	}
}

func (p *presence) apply(data []byte) {
	var n presenceNote
	if json.Unmarshal(data, &n) != nil || n.Node == "" || n.Node == p.h.node {
		return
	}
	p.mu.Lock()
	rn := p.nodes[n.Node]
	if rn == nil && n.Op != "bye" {
		rn = &remoteNode{users: make(map[string]int)}
		p.nodes[n.Node] = rn
	}
	if rn != nil {
		rn.seen = p.h.clock.Now()
	}
	var answer bool
	switch n.Op {
	case "user":
		if n.Conns <= 0 {
			delete(rn.users, n.User)
		} else {
			rn.users[n.User] = n.Conns
		}
	case "snapshot":
		rn.users = n.Users
		if rn.users == nil {
			rn.users = make(map[string]int)
		}
	case "hello":
		answer = true
	case "bye":
		delete(p.nodes, n.Node)
	}
	snap := maps.Clone(p.own)
	p.recompute()
	if answer {
		p.publish(presenceNote{Op: "snapshot", Users: snap})
	}
}
