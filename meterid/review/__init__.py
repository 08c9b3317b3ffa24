"""What goes to a person and what their labels say: the review queue of a scoring run (with an
audit sample of the auto-accepted photos) and the field audit of the auto-accept rule."""
