package pgstore

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-go/switchboard/poll"
)

// DefaultTable is the table name used when Options.Table is empty.
const DefaultTable = "switchboard_poll_jobs"

// Options configures New. Nil means the defaults.
type Options struct {
	// Table is the table name, optionally schema-qualified ("app.jobs"):
	// lower-case letters, digits and '_'. Default DefaultTable.
	Table string
}

// Store is a poll.Store on PostgreSQL. It is safe for concurrent use.
type Store struct {
	db    *pgxpool.Pool
	table string // quoted identifier
	index string // quoted identifier of the expiry index
}

var _ poll.Store = (*Store)(nil)

var tableRE = regexp.MustCompile(`^([a-z_][a-z0-9_]{0,47}\.)?[a-z_][a-z0-9_]{0,47}$`)

// New returns a store on db. Call Migrate once (any node, any number of
// times) before use.
func New(db *pgxpool.Pool, opts *Options) (*Store, error) {
	name := DefaultTable
	if opts != nil && opts.Table != "" {
		name = opts.Table
	}
	if !tableRE.MatchString(name) {
		return nil, fmt.Errorf("pgstore: invalid table name %q", name)
	}
	schema, table := "", name
	for i := range len(name) {
		if name[i] == '.' {
			schema, table = name[:i], name[i+1:]
		}
	}
	s := &Store{db: db, table: pgx.Identifier{table}.Sanitize(), index: pgx.Identifier{table + "_expires"}.Sanitize()}
	if schema != "" {
		s.table = pgx.Identifier{schema, table}.Sanitize()
	}
	return s, nil
}

// Migrate creates the table and its index if they do not exist. It is
// idempotent.
func (s *Store) Migrate(ctx context.Context) error {
	_, err := s.db.Exec(ctx, `
CREATE TABLE IF NOT EXISTS `+s.table+` (
	id       text PRIMARY KEY,
	status   text NOT NULL,
	progress double precision NOT NULL DEFAULT 0,
	message  text NOT NULL DEFAULT '',
	result   bytea,
	error    text NOT NULL DEFAULT '',
	created  timestamptz NOT NULL,
	updated  timestamptz NOT NULL,
	expires  timestamptz
);
CREATE INDEX IF NOT EXISTS `+s.index+` ON `+s.table+` (expires) WHERE expires IS NOT NULL;`)
	if err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	return nil
}

const columns = `id, status, progress, message, result, error, created, updated, expires`

func scan(row pgx.Row) (poll.Job, error) {
	var j poll.Job
	var status string
	var expires *time.Time
	var result []byte
	err := row.Scan(&j.ID, &status, &j.Progress, &j.Message, &result, &j.Error, &j.Created, &j.Updated, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return poll.Job{}, poll.ErrNotFound
	}
	if err != nil {
		return poll.Job{}, err
	}
	j.Status = poll.Status(status)
	j.Result = result
	if expires != nil {
		j.Expires = *expires
	}
	j.Created, j.Updated = j.Created.UTC(), j.Updated.UTC()
	if !j.Expires.IsZero() {
		j.Expires = j.Expires.UTC()
	}
	return j, nil
}

func args(j poll.Job) []any {
	var expires *time.Time
	if !j.Expires.IsZero() {
		expires = &j.Expires
	}
	var result []byte
	if len(j.Result) > 0 {
		result = j.Result
	}
	return []any{j.ID, string(j.Status), j.Progress, j.Message, result, j.Error, j.Created, j.Updated, expires}
}

// Create inserts job.
func (s *Store) Create(ctx context.Context, job poll.Job) error {
	_, err := s.db.Exec(ctx, `INSERT INTO `+s.table+` (`+columns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, args(job)...)
	if err != nil {
		return fmt.Errorf("pgstore: create: %w", err)
	}
	return nil
}

// Get returns the job with id, or poll.ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (poll.Job, error) {
	return scan(s.db.QueryRow(ctx, `SELECT `+columns+` FROM `+s.table+` WHERE id = $1`, id))
}

// Update applies fn to the job with id in a transaction that holds its
// row lock.
func (s *Store) Update(ctx context.Context, id string, fn func(*poll.Job) error) (poll.Job, error) {
	var out poll.Job
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		job, err := scan(tx.QueryRow(ctx, `SELECT `+columns+` FROM `+s.table+` WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if err := fn(&job); err != nil {
			return err
		}
		a := args(job)
		_, err = tx.Exec(ctx, `UPDATE `+s.table+` SET status = $2, progress = $3, message = $4, result = $5, error = $6, created = $7, updated = $8, expires = $9 WHERE id = $1`, a...)
		out = job
		return err
	})
	if err != nil {
		return poll.Job{}, err
	}
	return out, nil
}

// Delete removes the job with id.
func (s *Store) Delete(ctx context.Context, id string) error {
	_, err := s.db.Exec(ctx, `DELETE FROM `+s.table+` WHERE id = $1`, id)
	return err
}

// DeleteExpired removes the jobs expired at now.
func (s *Store) DeleteExpired(ctx context.Context, now time.Time) (int, error) {
	tag, err := s.db.Exec(ctx, `DELETE FROM `+s.table+` WHERE expires IS NOT NULL AND expires <= $1`, now)
	if err != nil {
		return 0, err
	}
	return int(tag.RowsAffected()), nil
}
