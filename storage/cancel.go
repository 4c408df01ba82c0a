package storage

import "errors"

// ErrCancelled is returned by DecideAndRecord when the caller's context was
// done before the write began: nothing was recorded, so nothing may be
// done. Once the write has begun, the caller's context no longer matters
// and the attempt is recorded (or fails for another reason): the start of
// the write is the one point at which a call stops being cancellable.
var ErrCancelled = errors.New("storage: the call was cancelled before its attempt was recorded")
