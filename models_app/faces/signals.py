"""Announcements of the faces domain (a module of its own: listeners import nothing else).

``images_erased``: sent inside an erasure's transaction (``faces.erasure``) with
``image_ids`` and ``subject_ids`` (strings); a receiver returns how many rows it scrubbed.
"""

from __future__ import annotations

from django.dispatch import Signal

images_erased = Signal()
