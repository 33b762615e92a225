// Package pgstore is a PostgreSQL poll.Store: jobs live in one table, so
// a status lookup, a wait or a cancel on any node sees every job. Pair it
// with a shared pubsub broker (pgpubsub, say) in poll.JobsOptions so that
// finish and cancel notifications reach every node too.
//
//	db, _ := pgxpool.New(ctx, url)
//	store, _ := pgstore.New(db, nil)
//	if err := store.Migrate(ctx); err != nil { ... }
//	jobs := poll.NewJobs(&poll.JobsOptions{Store: store, Broker: broker})
//
// Update runs in a transaction that locks the job's row (SELECT ... FOR
// UPDATE), so status changes from different nodes never interleave: the
// first final status wins. The store holds no goroutine; Jobs sweeps
// expired rows through DeleteExpired. It is bounded by that expiry, not by
// a count.
package pgstore
