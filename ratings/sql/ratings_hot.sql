-- ratings_hot: the rater hot path (ratings/hotpath.py) as one statement.
-- Installed by ratings/migrations/0004_hot_path_function.py, which reads this file.
-- A change here needs a new migration that installs it again (see that migration);
-- tests/ratings/test_sql_functions.py checks the database has this very body.
-- Installed again by 0009 (finished_at) and 0010 (the completion code's minimum of real
-- pairs, too-fast answers in the reply). Its comments name the Python it mirrors:
-- services._record is ratings/services/submission.py::_record, services._next_locked is
-- services/assignment.py::next_locked, services.mark_labels_pending is services/labels.py.
CREATE OR REPLACE FUNCTION ratings_hot(
    p_rater uuid, p_slug text, p_assignment uuid, p_same boolean, p_confidence integer,
    p_response_ms integer, p_now timestamptz, p_holds integer
) RETURNS jsonb LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    r ratings_rater%ROWTYPE;
    c ratings_campaign%ROWTYPE;
    p ratings_pair%ROWTYPE;
    a ratings_assignment%ROWTYPE;
    v_correct boolean;
    v_too_fast boolean := false;
    v_min_met boolean := false;  -- the completion code's minimum of real pairs judged
    v_created boolean := false;
    v_queue_labels boolean := false;
    v_live jsonb := '[]'::jsonb;
    v_n_live integer := 0;
    v_held integer := 0;
    v_roll double precision;
    v_pid bigint;
    v_kind text;
    v_stop text := 'no_work';
    v_status text;
    v_next jsonb := NULL;
    v_outcome text := 'ok';
BEGIN
    -- 1. Lock the rater (the session's rater, in the non-draft campaign of this slug).
    SELECT rr.* INTO r FROM ratings_rater rr
        JOIN ratings_campaign cc ON cc.id = rr.campaign_id
        WHERE rr.public_id = p_rater AND cc.slug = p_slug AND cc.status <> 'draft'
        FOR UPDATE OF rr;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('outcome', 'fallback');
    END IF;
    SELECT * INTO c FROM ratings_campaign WHERE id = r.campaign_id;
    -- Qualification, blocks, consent (or its refusal), a finished rater: the Python path
    -- (nothing written yet).
    IF r.blocked OR NOT r.qualified OR r.finished_at IS NOT NULL OR r.declined_at IS NOT NULL
       OR (c.consent_text <> '' AND r.consented_at IS NULL) THEN
        RETURN jsonb_build_object('outcome', 'fallback', 'campaign_id', c.id);
    END IF;

    IF p_assignment IS NOT NULL THEN
        -- 2. Lock the pair, found through the rater's own assignment.
        SELECT pp.* INTO p FROM ratings_pair pp WHERE pp.id = (
            SELECT aa.pair_id FROM ratings_assignment aa
            WHERE aa.public_id = p_assignment AND aa.rater_id = r.id LIMIT 1)
            FOR NO KEY UPDATE OF pp;
        IF NOT FOUND THEN  -- 404 from the Python path
            RETURN jsonb_build_object('outcome', 'fallback', 'campaign_id', c.id);
        END IF;
        -- Every writer of an assignment holds its pair's lock: this read is stable.
        SELECT * INTO a FROM ratings_assignment WHERE public_id = p_assignment;
        IF a.state <> 'issued' OR a.expires <= p_now THEN  -- retry, expired: Python path
            RETURN jsonb_build_object('outcome', 'fallback', 'campaign_id', c.id);
        END IF;
        -- 3. Record (services._record).
        v_correct := CASE WHEN p.expected_same IS NULL THEN NULL
                          ELSE p_same = p.expected_same END;
        v_too_fast := p_response_ms < c.min_response_ms;
        INSERT INTO ratings_judgment (assignment_id, campaign_id, rater_id, pair_id, same,
            confidence, response_ms, left_image_id, correct, too_fast, created)
        VALUES (a.id, c.id, r.id, p.id, p_same, p_confidence, p_response_ms,
            CASE WHEN a.left_is_a THEN p.image_a_id ELSE p.image_b_id END,
            v_correct, v_too_fast, p_now);
        UPDATE ratings_assignment SET state = 'submitted', closed = p_now WHERE id = a.id;
        v_created := true;
        r.judgments_count := r.judgments_count + 1;
        r.too_fast_count := r.too_fast_count + v_too_fast::integer;
        IF p.kind = 'attention' THEN
            r.attention_count := r.attention_count + 1;
            r.attention_failed := r.attention_failed + (NOT v_correct)::integer;
            IF r.attention_failed > c.attention_failures_allowed THEN
                r.blocked := true; r.blocked_reason := 'attention'; r.blocked_at := p_now;
            END IF;
        ELSIF p.kind IN ('gold_same', 'gold_different') THEN
            r.gold_count := r.gold_count + 1;
            r.gold_correct := r.gold_correct + coalesce(v_correct, false)::integer;
            IF r.gold_correct::double precision / r.gold_count < c.pass_mark THEN
                r.blocked := true; r.blocked_reason := 'gold_accuracy'; r.blocked_at := p_now;
            END IF;
        END IF;
        UPDATE ratings_rater SET judgments_count = r.judgments_count,
            too_fast_count = r.too_fast_count, attention_count = r.attention_count,
            attention_failed = r.attention_failed, gold_count = r.gold_count,
            gold_correct = r.gold_correct, blocked = r.blocked,
            blocked_reason = r.blocked_reason, blocked_at = r.blocked_at
            WHERE id = r.id;
        v_held := 1;  -- the judged pair's lock: from here, never wait for another pair
    END IF;

    -- 4. Next holds (services._next_locked), unless just blocked.
    IF NOT r.blocked AND p_holds > 0 THEN
        IF c.status <> 'active' THEN
            v_status := 'closed';
        ELSE
            FOR a IN SELECT * FROM ratings_assignment
                     WHERE rater_id = r.id AND state = 'issued' ORDER BY issued, id LOOP
                IF a.expires <= p_now THEN  -- own overdue hold: the Python path expires it
                    v_outcome := 'next_fallback';
                    EXIT;
                END IF;
                v_live := v_live || jsonb_build_array(jsonb_build_object(
                    'id', a.public_id, 'phase', a.phase,
                    'expires_us', (extract(epoch FROM a.expires) * 1000000)::bigint));
                v_n_live := v_n_live + 1;
            END LOOP;
            WHILE v_outcome = 'ok' AND v_n_live < p_holds LOOP
                IF c.rater_quota > 0 AND r.judgments_count + v_n_live >= c.rater_quota THEN
                    -- The quota ends the work only once the minimum of real pairs is met,
                    -- real pairs on hold counted as work to come (selectors.work_minimum_met:
                    -- min_work_pairs, capped at active pairs and at what the quota leaves).
                    v_min_met := r.judgments_count - r.gold_count - r.attention_count
                        + (SELECT count(*) FROM ratings_assignment x
                           JOIN ratings_pair xp ON xp.id = x.pair_id
                           WHERE x.rater_id = r.id AND x.state = 'issued' AND xp.kind = 'deid')
                        >= LEAST(c.min_work_pairs, GREATEST(c.rater_quota - c.qualification_size, 1),
                            (SELECT count(*) FROM ratings_pair pp WHERE pp.campaign_id = c.id
                               AND pp.active AND pp.kind = 'deid'));
                    IF v_min_met THEN
                        v_stop := 'finished';
                        EXIT;
                    END IF;
                END IF;
                v_roll := random();
                v_pid := NULL;
                IF v_roll < c.attention_rate + c.gold_rate THEN
                    -- Known pairs are uncapped (each rater sees each once): no lock needed.
                    SELECT pp.id, pp.kind INTO v_pid, v_kind FROM ratings_pair pp
                    WHERE pp.campaign_id = c.id AND pp.active
                      AND pp.kind = ANY (CASE WHEN v_roll < c.attention_rate
                                              THEN ARRAY['attention']
                                              ELSE ARRAY['gold_same', 'gold_different'] END)
                      AND NOT EXISTS (SELECT 1 FROM ratings_assignment x
                                      WHERE x.rater_id = r.id AND x.pair_id = pp.id
                                        AND x.state <> 'expired')
                    ORDER BY random() LIMIT 1;
                END IF;
                IF v_pid IS NULL THEN
                    -- locking.claim_deid_pair: fullest first, SKIP LOCKED, taken + 1.
                    UPDATE ratings_pair SET taken = taken + 1
                    WHERE id = (
                        SELECT pp.id FROM ratings_pair pp
                        WHERE pp.campaign_id = c.id AND pp.active AND pp.kind = 'deid'
                          AND pp.taken < c.judgments_per_pair
                          AND NOT EXISTS (SELECT 1 FROM ratings_assignment x
                                          WHERE x.pair_id = pp.id AND x.rater_id = r.id
                                            AND x.state <> 'expired')
                        ORDER BY pp.taken DESC, pp.id
                        LIMIT 1
                        FOR NO KEY UPDATE OF pp SKIP LOCKED)
                    RETURNING id, kind INTO v_pid, v_kind;
                    IF v_pid IS NULL AND v_held = 0 THEN
                        -- Every candidate locked (or none left) and no pair lock held yet:
                        -- the Python path may wait for one (locking.lock_first_pair).
                        v_outcome := 'next_fallback';
                        EXIT;
                    END IF;
                    IF v_pid IS NULL THEN
                        EXIT;
                    END IF;
                    v_held := v_held + 1;
                END IF;
                INSERT INTO ratings_assignment (public_id, campaign_id, rater_id, pair_id,
                    phase, state, left_is_a, issued, expires, closed)
                VALUES (gen_random_uuid(), c.id, r.id, v_pid, 'work', 'issued',
                    random() < 0.5, p_now, p_now + c.hold_timeout_s * interval '1 second', NULL)
                RETURNING * INTO a;
                v_live := v_live || jsonb_build_array(jsonb_build_object(
                    'id', a.public_id, 'phase', a.phase,
                    'expires_us', (extract(epoch FROM a.expires) * 1000000)::bigint));
                v_n_live := v_n_live + 1;
            END LOOP;
            IF v_n_live > 0 THEN
                v_status := 'ok';
            ELSIF v_stop = 'finished' THEN
                v_status := 'finished';  -- the rater is qualified here
            ELSE
                IF r.judgments_count > 0 THEN  -- no holds left: judged pairs only
                    v_min_met := r.judgments_count - r.gold_count - r.attention_count
                        >= LEAST(c.min_work_pairs, CASE WHEN c.rater_quota > 0
                                 THEN GREATEST(c.rater_quota - c.qualification_size, 1) END,
                            (SELECT count(*) FROM ratings_pair pp WHERE pp.campaign_id = c.id
                               AND pp.active AND pp.kind = 'deid'));
                END IF;
                -- The completion code means work was done: the minimum of real pairs.
                v_status := CASE WHEN r.judgments_count > 0 AND v_min_met
                                 THEN 'finished' ELSE v_stop END;
            END IF;
        END IF;
        IF v_outcome = 'ok' THEN
            v_next := jsonb_build_object('status', v_status, 'assignments', v_live);
        END IF;
    END IF;

    -- 5. Campaign row last (services.mark_labels_pending): one label update per burst.
    IF v_created AND NOT c.labels_pending THEN
        UPDATE ratings_campaign SET labels_pending = true
            WHERE id = c.id AND NOT labels_pending;
        v_queue_labels := FOUND;
    END IF;

    RETURN jsonb_build_object(
        'outcome', v_outcome, 'created', v_created, 'campaign_id', c.id,
        'queue_labels', v_queue_labels, 'rater_id', r.id,
        'rater', replace(r.public_id::text, '-', ''),
        'judgments_count', r.judgments_count, 'gold_count', r.gold_count,
        'attention_count', r.attention_count, 'min_work_pairs', c.min_work_pairs,
        'too_fast', v_too_fast,
        'blocked', r.blocked, 'blocked_reason', r.blocked_reason,
        'qualification_size', c.qualification_size, 'rater_quota', c.rater_quota,
        'next', v_next);
END
$fn$;
