"""Error codes of the faces domain (ingest and serving), each with its one HTTP status.

The ingest codes are the ``ImageRejected`` codes of the pure ``vision.imagefile`` module
(which imports nothing of ours) plus the detector's; their statuses live here.
"""

from __future__ import annotations

from deidplatform.errors import error_code

# The file itself: unreadable, empty, corrupt, too big.
FILE_TOO_LARGE = error_code("file_too_large", 413)
EMPTY_FILE = error_code("empty_file", 400)
NOT_AN_IMAGE = error_code("not_an_image", 400)
CORRUPT_IMAGE = error_code("corrupt_image", 400)
ANIMATED_IMAGE = error_code("animated_image", 400)
TOO_MANY_PIXELS = error_code("too_many_pixels", 400)
UNSUPPORTED_BIT_DEPTH = error_code("unsupported_bit_depth", 400)
TOO_SMALL = error_code("too_small", 400)
# A readable image without a usable face.
NO_FACE = error_code("no_face", 422)
SEVERAL_FACES = error_code("several_faces", 422)
# The detector's bounded search ran out of time before every pass was tried.
FACE_SEARCH_TOO_COSTLY = error_code("face_search_too_costly", 422)
# An upload's kind: sources or donors only; a donor never comes with a subject.
INVALID_KIND = error_code("invalid_kind", 400)
