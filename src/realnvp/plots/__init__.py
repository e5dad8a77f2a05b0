"""Figures. Every function returns a matplotlib ``Figure``; callers save it. Nothing here calls
``plt.show()`` or touches pyplot's global state."""
