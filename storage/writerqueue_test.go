package storage

import (
	"testing"
	"time"
)

// kinds names a batch's writes: u for urgent, p for patient.
func kinds(batch []writeReq) string {
	s := ""
	for _, r := range batch {
		if r.patient {
			s += "p"
		} else {
			s += "u"
		}
	}
	return s
}

// TestWriterQueueOrder: urgent writes go first without the patient ones'
// work while those are young; the patient ones follow right after an
// urgent batch; they join an urgent batch once they have waited
// companyWait; alone, they wait companyWait for company; closing the queue
// returns everything left.
func TestWriterQueueOrder(t *testing.T) {
	in := make(chan writeReq, 16)
	w := &writerQueue{in: in, wait: companyWait, timer: time.NewTimer(time.Hour)}
	w.timer.Stop()
	u := writeReq{}
	pq := func() writeReq { return writeReq{patient: true, queued: time.Now()} } // a patient write, queued now

	in <- pq()
	in <- u
	in <- u
	if got := kinds(w.next()); got != "uu" {
		t.Fatalf("first batch %q, want the urgent writes alone", got)
	}
	if got := kinds(w.next()); got != "p" {
		t.Fatalf("second batch %q, want the patient write right after", got)
	}

	in <- pq()
	time.Sleep(companyWait + time.Millisecond)
	in <- u
	if got := kinds(w.next()); got != "up" {
		t.Fatalf("batch %q, want an urgent write with the patient one that waited its turn", got)
	}

	in <- pq()
	if got := kinds(w.next()); got != "p" {
		t.Fatalf("batch %q, want a patient write right after an urgent batch", got)
	}
	// A wait far longer than companyWait, so that a loaded machine's
	// scheduling cannot age the first write before the second arrives.
	w.wait = 200 * time.Millisecond
	start := time.Now()
	in <- pq()
	go func() { time.Sleep(10 * time.Millisecond); in <- pq() }()
	if got := kinds(w.next()); got != "pp" {
		t.Fatalf("batch %q, want the two patient writes together", got)
	}
	if waited := time.Since(start); waited < w.wait {
		t.Fatalf("patient writes alone were committed after %v, want them to wait %v for company", waited, w.wait)
	}
	w.wait = companyWait

	// A reader settling its own writes does not wait for company: with an
	// hour's wait, only the hurry can end it.
	hurry := make(chan struct{}, 1)
	w.hurry, w.wait = hurry, time.Hour
	w.urgentLast = false
	in <- pq()
	go func() { time.Sleep(companyWait / 10); hurry <- struct{}{} }()
	if got := kinds(w.next()); got != "p" {
		t.Fatalf("batch %q after a hurry, want the patient write", got)
	}
	w.hurry, w.wait = nil, companyWait

	in <- pq()
	in <- u
	close(in)
	if got := kinds(w.next()); got != "up" {
		t.Fatalf("batch after close %q, want everything left", got)
	}
	if b := w.next(); b != nil {
		t.Fatalf("after everything: %q, want nil", kinds(b))
	}
}

// TestWriterQueueJoiners: once the writer has waited for another
// process's turn, the writes queued meanwhile, and the patient ones held
// back, join the batch it was about to commit.
func TestWriterQueueJoiners(t *testing.T) {
	in := make(chan writeReq, 16)
	w := &writerQueue{in: in, wait: companyWait, timer: time.NewTimer(time.Hour)}
	w.timer.Stop()
	w.patient = []writeReq{{patient: true, queued: time.Now()}}
	in <- writeReq{}
	in <- writeReq{patient: true, queued: time.Now()}
	if got := kinds(w.joiners([]writeReq{{}})); got != "uupp" {
		t.Fatalf("batch %q, want the urgent write, what was queued while it waited, and the patient one held back", got)
	}
	if len(w.patient) != 0 {
		t.Fatalf("%d patient writes still held back", len(w.patient))
	}
}

// TestWriterQueueFullBatches: however many writes are queued, a batch holds
// at most maxBatch, and patient writes that have waited their turn never
// overflow a full urgent batch.
func TestWriterQueueFullBatches(t *testing.T) {
	in := make(chan writeReq, 3*maxBatch)
	w := &writerQueue{in: in, wait: companyWait, timer: time.NewTimer(time.Hour)}
	w.timer.Stop()
	old := time.Now().Add(-time.Second) // long past their turn
	for range maxBatch + 10 {
		in <- writeReq{}
	}
	for range maxBatch + 10 {
		in <- writeReq{patient: true, queued: old}
	}
	close(in)
	total := 0
	for b := w.next(); b != nil; b = w.next() {
		if len(b) == 0 || len(b) > maxBatch {
			t.Fatalf("a batch of %d writes, want 1 to %d", len(b), maxBatch)
		}
		total += len(b)
	}
	if total != 2*(maxBatch+10) {
		t.Fatalf("%d writes returned, want %d", total, 2*(maxBatch+10))
	}
}
