package poll_test

import (
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A publish wakes every held request at once; each must answer with the
// message intact, whatever the others do with their buffers meanwhile.
func TestLongPollWokenTogetherEachAnswerTheirMessageIntact(t *testing.T) {
	const held = 50
	ctx := testCtx(t)
	f := newLP(t, 100, nil)
	cs := f.publish(t, "t", "start")

	for round, data := range []string{"first", "second", "third"} {
		answers := make([]<-chan answer, held)
		for i := range answers {
			answers[i] = f.getAsync(t, ctx, "t", url.Values{"cursor": {string(cs[round])}, "wait": {"30s"}})
		}
		f.held(t, ctx, held)
		cs = append(cs, f.publish(t, "t", data)...)
		for i, c := range answers {
			a := recvAnswer(t, ctx, c)
			require.Equal(t, 200, a.code, "request %d of round %d", i, round)
			assert.Equal(t, []string{data}, datas(a.body.Messages), "request %d of round %d", i, round)
			assert.Equal(t, cs[round+1], a.body.Cursor, "request %d of round %d", i, round)
		}
	}
}
