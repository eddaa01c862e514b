"""The model layer: a task model (an architecture's encoder + a task's head), loading teachers
as users bring them, structural surgery, and the one training loop every stage uses."""
