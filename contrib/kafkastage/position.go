package kafkastage

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stagefsm/stagefsm/stage"
)

var (
	_ stage.Resumable = (*Source)(nil)
	_ stage.Committer = (*Source)(nil)
)

// positionPrefix starts every position; the version after the 'v' names
// the encoding, so that a later one can still read this one.
const (
	positionPrefix  = "kafkastage/v"
	positionVersion = "1"
)

// checkpointed is the part of a Source made with WithCommitOnCheckpoint,
// owned by the stage's goroutine (Open, Next, Position, Resume, Commit and
// Close).
type checkpointed struct {
	parts     []topicPartition // what the Source reads, sorted
	next      map[topicPartition]int64
	committed map[topicPartition]int64 // the group's offsets, as last fetched or committed
	last      []byte                   // the position last committed
	admin     *kgo.Client              // fetches and commits the group's offsets
	adm       *kadm.Client             // admin, for the offsets requests
}

// openCheckpointed is Open for a Source made with WithCommitOnCheckpoint:
// it creates the client that commits and reads the group's committed
// offsets, where the partitions start unless Resume moves them. The client
// that consumes is made by the first Next, once the offsets are final.
func (s *Source) openCheckpointed(ctx context.Context) error {
	ck := &checkpointed{next: make(map[topicPartition]int64), committed: make(map[topicPartition]int64)}
	seen := make(map[topicPartition]bool)
	for _, topic := range s.topics {
		for _, id := range s.o.partitions {
			if id < 0 {
				return fmt.Errorf("kafkastage: WithPartitions was given the negative partition %d", id)
			}
			if tp := (topicPartition{topic, id}); !seen[tp] {
				seen[tp] = true
				ck.parts = append(ck.parts, tp)
			}
		}
	}
	slices.SortFunc(ck.parts, func(a, b topicPartition) int {
		return cmp.Or(strings.Compare(a.topic, b.topic), cmp.Compare(a.id, b.id))
	})
	admin, err := kgo.NewClient(s.kopts...)
	if err != nil {
		return fmt.Errorf("kafkastage: source client: %w", err)
	}
	fctx, cancel := context.WithTimeout(ctx, s.o.maxOutage)
	adm := kadm.NewClient(admin)
	offsets, err := adm.FetchOffsets(fctx, s.group)
	cancel()
	switch {
	case errors.Is(err, kerr.GroupIDNotFound):
		err = nil // no offsets committed yet
	case err == nil:
		err = offsets.Error()
	}
	if err != nil {
		admin.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return fmt.Errorf("kafkastage: group %s: fetching its committed offsets: %w", s.group, err)
	}
	for _, tp := range ck.parts {
		ck.next[tp] = 0 // no committed offset: the partition's start
		if o, ok := offsets.Lookup(tp.topic, tp.id); ok && o.At >= 0 {
			ck.next[tp], ck.committed[tp] = o.At, o.At
		}
	}
	ck.admin, ck.adm = admin, adm
	s.ck = ck
	return nil
}

// consume creates the client that reads the partitions from their next
// offsets. An offset out of range (the records were deleted) starts the
// partition at its start.
func (s *Source) consume() error {
	at := make(map[string]map[int32]kgo.Offset)
	for _, tp := range s.ck.parts {
		if at[tp.topic] == nil {
			at[tp.topic] = make(map[int32]kgo.Offset)
		}
		at[tp.topic][tp.id] = kgo.NewOffset().At(s.ck.next[tp])
	}
	client, err := kgo.NewClient(append(append([]kgo.Opt(nil), s.kopts...),
		kgo.ConsumePartitions(at), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return fmt.Errorf("kafkastage: source client: %w", err)
	}
	s.client = client
	return nil
}

// nextCheckpointed is Next for a Source made with WithCommitOnCheckpoint.
func (s *Source) nextCheckpointed(ctx context.Context, emit func(*Record)) error {
	if s.client == nil {
		if err := s.consume(); err != nil {
			return stage.Fatal(err)
		}
	}
	fs, err := s.poll(ctx, s.client)
	if err != nil {
		return err
	}
	n := 0
	fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
		tp := topicPartition{ftp.Topic, ftp.Partition}
		next, ok := s.ck.next[tp]
		if !ok || len(ftp.Records) == 0 {
			return
		}
		rs := make([]Record, 0, len(ftp.Records))
		for _, r := range ftp.Records {
			if r.Offset < next {
				continue // before the position: a fetch from before Resume
			}
			rs = append(rs, Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
				Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp})
			next = r.Offset + 1
		}
		s.ck.next[tp] = next
		s.stats.received.Add(uint64(len(rs)))
		n += len(rs)
		for i := range rs {
			emit(&rs[i])
		}
	})
	if n > 0 {
		s.downSince = time.Time{}
		return nil
	}
	return s.check(ctx)
}

func (s *Source) closeCheckpointed() {
	if s.client != nil {
		s.client.Close()
	}
	s.ck.admin.Close()
}

// Position returns the Source's position: the next offset of every
// partition it reads — one past the last record it emitted, or where the
// partition started — with the topics' names and the partitions' ids. It
// returns an error wrapping [ErrPosition] when the Source was made without
// [WithCommitOnCheckpoint] (its offsets then commit as records are
// delivered, which a checkpoint cannot follow) or is not open. See
// [stage.Resumable].
func (s *Source) Position() ([]byte, error) {
	if err := s.checkpointable(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(positionPrefix)+2+16*len(s.ck.parts))
	b = append(b, positionPrefix+positionVersion...)
	for i, tp := range s.ck.parts {
		if i == 0 || tp.topic != s.ck.parts[i-1].topic {
			b = append(b, ';')
			b = append(b, tp.topic...)
			b = append(b, ':')
		} else {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(tp.id), 10)
		b = append(b, '=')
		b = strconv.AppendInt(b, s.ck.next[tp], 10)
	}
	return b, nil
}

// Resume makes the Source read each partition from the offset pos gives
// it, pos being a [Source.Position] of an earlier run on the same topics
// and partitions (by this worker or another). The group's committed
// offsets are ignored: they trail the checkpoints, and are ahead of pos
// when the store fell back to an older checkpoint. It returns an error
// wrapping [ErrPosition] for a Source made without
// [WithCommitOnCheckpoint] and for a position that does not decode or
// names other topics or partitions, and an error when called after the
// first Next. See [stage.Resumable].
func (s *Source) Resume(_ context.Context, pos []byte) error {
	next, err := s.decodePosition(pos)
	if err != nil {
		return err
	}
	if s.client != nil {
		return errors.New("kafkastage: Source.Resume after Next")
	}
	s.ck.next = next
	return nil
}

// Commit commits pos, a [Source.Position] that a stored checkpoint holds,
// as the group's offsets of the Source's partitions, synchronously (5s at
// most), so that Kafka's tools show the group's progress; a position
// committed already is not committed again. The Source itself never reads
// these offsets back after a [Source.Resume]: the checkpoint is its
// position. A commit that fails is returned (the pipeline logs it, and
// counts nothing lost: the next checkpoint's commit covers it) and counted
// in [SourceStats].CommitErrors; the group must then have no members of
// its own (a group-mode [Source] of the same group makes every commit
// fail). It returns an error wrapping [ErrPosition] for a Source made
// without [WithCommitOnCheckpoint] and for a position of other topics or
// partitions. See [stage.Committer].
func (s *Source) Commit(ctx context.Context, pos []byte) error {
	next, err := s.decodePosition(pos)
	if err != nil {
		return err
	}
	if bytes.Equal(pos, s.ck.last) {
		return nil
	}
	offsets := make(kadm.Offsets)
	for _, tp := range s.ck.parts {
		offsets.Add(kadm.Offset{Topic: tp.topic, Partition: tp.id, At: next[tp], LeaderEpoch: -1})
	}
	cctx, cancel := context.WithTimeout(ctx, commitTimeout)
	err = s.ck.adm.CommitAllOffsets(cctx, s.group, offsets)
	cancel()
	if err != nil {
		s.stats.commitErrors.Add(1)
		return fmt.Errorf("kafkastage: group %s: committing a checkpoint's offsets: %w", s.group, err)
	}
	for _, tp := range s.ck.parts {
		if d := next[tp] - s.ck.committed[tp]; d > 0 {
			s.stats.committable.Add(uint64(d))
		}
		s.ck.committed[tp] = next[tp]
	}
	s.ck.last = append(s.ck.last[:0], pos...)
	return nil
}

// checkpointable returns the error of Position, Resume and Commit on a
// Source that cannot serve them.
func (s *Source) checkpointable() error {
	switch {
	case !s.o.commitOnCheckpoint || s.tx != nil:
		return fmt.Errorf("%w: group %s: the Source needs WithCommitOnCheckpoint(true) and WithPartitions in a checkpointing pipeline",
			ErrPosition, s.group)
	case s.ck == nil:
		return fmt.Errorf("%w: group %s: the Source is not open", ErrPosition, s.group)
	}
	return nil
}

// decodePosition decodes what Position encoded, checking that it names
// exactly the Source's topics and partitions.
func (s *Source) decodePosition(pos []byte) (map[topicPartition]int64, error) {
	if err := s.checkpointable(); err != nil {
		return nil, err
	}
	bad := func(why string) (map[topicPartition]int64, error) {
		return nil, fmt.Errorf("%w: %.80q is not a position of this Source's partitions (%s): %s",
			ErrPosition, pos, s.describe(), why)
	}
	rest, ok := strings.CutPrefix(string(pos), positionPrefix)
	if !ok {
		return bad("it does not decode")
	}
	version, rest, _ := strings.Cut(rest, ";")
	if version != positionVersion {
		return bad("version " + version + " is not known")
	}
	next := make(map[topicPartition]int64, len(s.ck.parts))
	for _, group := range strings.Split(rest, ";") {
		topic, list, ok := strings.Cut(group, ":")
		if !ok {
			return bad("it does not decode")
		}
		for _, part := range strings.Split(list, ",") {
			ids, offs, ok := strings.Cut(part, "=")
			id, err1 := strconv.ParseInt(ids, 10, 32)
			off, err2 := strconv.ParseInt(offs, 10, 64)
			if !ok || err1 != nil || err2 != nil || off < 0 {
				return bad("it does not decode")
			}
			tp := topicPartition{topic, int32(id)}
			if _, dup := next[tp]; dup {
				return bad("it does not decode")
			}
			if _, ours := s.ck.next[tp]; !ours {
				return bad(fmt.Sprintf("it has %s/%d, which the Source does not read", topic, id))
			}
			next[tp] = off
		}
	}
	for _, tp := range s.ck.parts {
		if _, ok := next[tp]; !ok {
			return bad(fmt.Sprintf("it lacks %s/%d", tp.topic, tp.id))
		}
	}
	return next, nil
}

// describe names the Source's partitions, as "topic/0,1 other/0,1".
func (s *Source) describe() string {
	var b strings.Builder
	for i, tp := range s.ck.parts {
		if i == 0 || tp.topic != s.ck.parts[i-1].topic {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(tp.topic)
			b.WriteByte('/')
		} else {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(tp.id)))
	}
	return b.String()
}
