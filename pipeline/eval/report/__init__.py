"""Result tables: the domain baseline table (stage baselines, module `baselines`) and the
paper-style report (stage report): BDLM Table 3, the ablations, Table 4 (`tables`), the λ sweep
(`lambda_sweep`) and Cao et al.'s protocols, from whatever metrics files exist (read and checked
by `inputs`; each row's source is a `refs.Ref`), with every cell carrying its interval
(`formatting`) and the user-agnostic floors as rows; rows are compared by paired tests on the
users they share (`paired_tests`), the paper's claims are read off those tests (`claims`), and
`build` assembles the report as JSON with the data `dvc plots` draws (`plots`), which `markdown`
renders."""
