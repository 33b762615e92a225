package poll

import (
	"context"
	"sync"
	"time"
)

// Store keeps jobs where every node that serves them can see them. The
// in-memory store serves one process; package pgstore shares jobs through
// PostgreSQL. Implementations are safe for concurrent use.
type Store interface {
	// Create adds a new job. It fails with ErrTooManyJobs when the store
	// is full.
	Create(ctx context.Context, job Job) error
	// Get returns the job with id, or ErrNotFound. It does not check
	// expiry; Jobs does.
	Get(ctx context.Context, id string) (Job, error)
	// Update applies fn to the job with id atomically (no other Update of
	// that job interleaves) and stores the result. When fn returns an
	// error, nothing is stored and Update returns that error. A missing
	// job is ErrNotFound.
	Update(ctx context.Context, id string, fn func(*Job) error) (Job, error)
	// Delete removes the job with id; a missing job is not an error.
	Delete(ctx context.Context, id string) error
	// DeleteExpired removes the jobs whose Expires is set and not after
	// now, and reports how many.
	DeleteExpired(ctx context.Context, now time.Time) (int, error)
}

// DefaultMaxJobs bounds the jobs a MemoryStore holds.
const DefaultMaxJobs = 100_000

// MemoryStore is the in-memory Store: the default, and a real one for a
// single process. It holds at most its limit of jobs, expired ones
// included until a sweep removes them.
type MemoryStore struct {
	max  int
	mu   sync.Mutex
	jobs map[string]Job // guarded by mu
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns a store that holds at most limit jobs (limit <= 0
// means DefaultMaxJobs); past it Create fails with ErrTooManyJobs.
func NewMemoryStore(limit int) *MemoryStore {
	if limit <= 0 {
		limit = DefaultMaxJobs
	}
	return &MemoryStore{max: limit, jobs: make(map[string]Job)}
}

// Create adds job.
func (s *MemoryStore) Create(_ context.Context, job Job) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.jobs) >= s.max {
		return ErrTooManyJobs
	}
	s.jobs[job.ID] = job
	return nil
}

// Get returns the job with id.
func (s *MemoryStore) Get(_ context.Context, id string) (Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	job, ok := s.jobs[id]
	if !ok {
		return Job{}, ErrNotFound
	}
	return job, nil
}

// Update applies fn to the job with id under the store's lock.
func (s *MemoryStore) Update(_ context.Context, id string, fn func(*Job) error) (Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	job, ok := s.jobs[id]
	if !ok {
		return Job{}, ErrNotFound
	}
	if err := fn(&job); err != nil {
		return Job{}, err
	}
	s.jobs[id] = job
	return job, nil
}

// Delete removes the job with id.
func (s *MemoryStore) Delete(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.jobs, id)
	return nil
}

// DeleteExpired removes the jobs expired at now.
func (s *MemoryStore) DeleteExpired(_ context.Context, now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, job := range s.jobs {
		if !job.Expires.IsZero() && !now.Before(job.Expires) {
			delete(s.jobs, id)
			n++
		}
	}
	return n, nil
}
