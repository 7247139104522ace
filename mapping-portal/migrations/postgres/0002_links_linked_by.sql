-- Who made each link (the actor of its "link" change; NULL for links made before this
-- migration). A login sees, and may remove, the links it made for certificate DNs it proved
-- by signature in an earlier session.
ALTER TABLE links ADD COLUMN linked_by TEXT;
CREATE INDEX links_linked_by ON links (linked_by);
