"""Django finds the app's admin here; each domain registers its own models."""

import models_app.faces.admin  # noqa: F401
import models_app.jobs.admin  # noqa: F401
import models_app.rounds.admin  # noqa: F401
import models_app.training.admin  # noqa: F401
