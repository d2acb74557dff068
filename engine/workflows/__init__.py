"""Attune workflow definitions: the typed model and its parser (:mod:`.definition`), the checks
made when one is saved (:mod:`.validation`), the template context (:mod:`.expressions`) and the
pure planning core that says what runs next (:mod:`.plan`). Running workflows comes later."""
