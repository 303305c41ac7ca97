package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/api/daemon"
	"github.com/ferryhq/ferry/host/identity"
)

// vault opens $FERRY_HOME/vault.
func (a *app) vault() (*identity.Vault, error) {
	h, err := a.home()
	if err != nil {
		return nil, err
	}
	return identity.OpenVault(daemon.VaultDir(h))
}

// checkIdentity makes node create --identity NAME fail before anything
// starts when NAME is not in the vault (a typo would otherwise give the
// node an identity nobody expects).
func (a *app) checkIdentity(name string) error {
	if name == "" {
		return nil
	}
	v, err := a.vault()
	if err != nil {
		return err
	}
	if _, err := v.Get(name); err != nil {
		return fmt.Errorf("--identity: %w", err)
	}
	return nil
}

type identityView struct {
	Name       string    `json:"name"`
	Identifier string    `json:"identifier"`
	PublicKey  string    `json:"public_key"`
	Created    time.Time `json:"created"`
}

func viewOf(id *identity.Identity) identityView {
	return identityView{Name: id.Name, Identifier: id.Identifier, PublicKey: hex.EncodeToString(id.PublicKey), Created: id.Created}
}

func (a *app) newIdentityCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "identity",
		Short: "Manage identities (Ed25519 keys in $FERRY_HOME/vault) that nodes prove in secure channels",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "create NAME",
		Short: "Create an identity and print its identifier",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := a.vault()
			if err != nil {
				return err
			}
			id, err := v.Create(args[0])
			if errors.Is(err, identity.ErrExists) {
				return fmt.Errorf("identity %s already exists; see ferry identity show %s", args[0], args[0])
			}
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(viewOf(id))
			}
			a.printf("%s\n", id.Identifier)
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List identities",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := a.vault()
			if err != nil {
				return err
			}
			ids, err := v.List()
			if err != nil {
				return err
			}
			views := make([]identityView, 0, len(ids))
			for _, id := range ids {
				views = append(views, viewOf(id))
			}
			if a.json() {
				return a.printJSON(views)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tIDENTIFIER\tCREATED")
			for _, v := range views {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", v.Name, v.Identifier, v.Created.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "show NAME",
		Short: "Show an identity",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := a.vault()
			if err != nil {
				return err
			}
			id, err := v.Get(args[0])
			if err != nil {
				return err
			}
			view := viewOf(id)
			if a.json() {
				return a.printJSON(view)
			}
			a.printf("Name:        %s\nIdentifier:  %s\nPublic key:  %s\nCreated:     %s\n", view.Name, view.Identifier, view.PublicKey, view.Created.Format(time.RFC3339))
			return nil
		},
	})
	var force bool
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an identity (its key is gone for good)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			v, err := a.vault()
			if err != nil {
				return err
			}
			if !force {
				if user, err := a.identityUser(name); err != nil {
					return err
				} else if user != "" {
					return fmt.Errorf("node %s uses identity %s; delete the node first, or pass --force", user, name)
				}
			}
			if err := v.Delete(name); err != nil {
				return err
			}
			if !a.json() {
				a.printf("deleted identity %s\n", name)
				return nil
			}
			return a.printJSON(map[string]string{"deleted": name})
		},
	}
	del.Flags().BoolVar(&force, "force", false, "delete even if a node uses the identity")
	cmd.AddCommand(del)
	return cmd
}

// identityUser returns a node that proves identity name, if any.
func (a *app) identityUser(name string) (string, error) {
	h, err := a.home()
	if err != nil {
		return "", err
	}
	nodes, err := h.Names()
	if err != nil {
		return "", err
	}
	for _, n := range nodes {
		cfg, err := h.Load(n)
		if err != nil {
			continue
		}
		if cfg.Identity == name || (cfg.Identity == "" && cfg.Name == name) {
			return n, nil
		}
	}
	return "", nil
}
