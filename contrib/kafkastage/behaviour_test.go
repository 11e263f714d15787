package kafkastage_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/contrib/kafkastage"
)

var errPoison = errors.New("poison")

func TestEndToEndWithDeadLetters(t *testing.T) {
	const n = 300
	k := startCluster(t)
	k.fill(t, 0, n)
	// "7" fails to decode, "42" is a poison record failing every attempt,
	// "99" grows over the size limit.
	f := func(ctx context.Context, r *kafkastage.Record, emit func(*kafkastage.Record)) error {
		switch string(r.Value) {
		case "7":
			_, err := strconv.Atoi("x" + string(r.Value))
			return err
		case "42":
			return errPoison
		case "99":
			r.Value = []byte(strings.Repeat("9", 2048))
		}
		emit(r)
		return nil
	}
	m := startMember(t, k, f, nil, kafkastage.WithMaxRecordBytes(1024))
	out := k.read(t, outTopic, n-3)
	dead := k.read(t, dlqTopic, 3)
	waitUntil(t, "all offsets committable", func() bool { return m.src.Stats().Committable == n })
	require.NoError(t, m.stop(t))

	got := values(out)
	assert.Len(t, out, n-3)
	for i := range n {
		v := strconv.Itoa(i)
		if v == "7" || v == "42" || v == "99" {
			assert.Zero(t, got[v], v)
			continue
		}
		assert.Equal(t, 1, got[v], v)
	}
	for _, r := range out {
		assert.Equal(t, string(r.Value), string(r.Key), "key kept")
		assert.Equal(t, string(r.Value), header(r, "n"), "headers kept")
	}
	require.Len(t, dead, 3)
	causes := map[string]string{}
	for _, r := range dead {
		assert.Equal(t, "in", header(r, kafkastage.HeaderTopic))
		assert.NotEmpty(t, header(r, kafkastage.HeaderPartition))
		assert.NotEmpty(t, header(r, kafkastage.HeaderOffset))
		causes[string(r.Key)] = header(r, kafkastage.HeaderCause)
	}
	assert.Contains(t, causes["7"], "invalid syntax")
	assert.Contains(t, causes["42"], errPoison.Error())
	assert.Contains(t, causes["99"], "too large")
	ps := m.p.Stats()
	assert.Zero(t, ps.InFlight)
	assert.EqualValues(t, n, m.src.Stats().Received)
	assert.EqualValues(t, 3, m.dl.Stats().Written)
	assert.EqualValues(t, n-3, m.sink.Stats().Produced)
}

func TestRestartedMemberStartsFromCommittedOffset(t *testing.T) {
	const n = 200
	k := startCluster(t)
	k.fill(t, 0, n)
	m := startMember(t, k, passOn, nil)
	waitUntil(t, "first half committable", func() bool { return m.src.Stats().Committable == n })
	require.NoError(t, m.stop(t))

	k.fill(t, n, n)
	m2 := startMember(t, k, passOn, nil)
	waitUntil(t, "second half committable", func() bool { return m2.src.Stats().Committable == n })
	require.NoError(t, m2.stop(t))
	assert.EqualValues(t, n, m2.src.Stats().Received, "the second member reads only what was not committed")
	out := values(k.read(t, outTopic, 2*n))
	assert.Len(t, out, 2*n)
}

func TestOutageFailsWithUnavailable(t *testing.T) {
	k := startCluster(t)
	k.fill(t, 0, 10)
	m := startMember(t, k, passOn, []kafkastage.SourceOption{kafkastage.WithMaxOutage(300 * time.Millisecond)},
		kafkastage.WithMaxOutage(time.Second))
	waitUntil(t, "input committable", func() bool { return m.src.Stats().Committable == 10 })
	k.close()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err := m.p.Wait(ctx)
	require.Error(t, err)
	assert.ErrorIs(t, err, kafkastage.ErrUnavailable)
}
